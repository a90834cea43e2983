package raftest

import (
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"
)

// ErrCrashed is what every call into the stores, the FSM and the transport of a crashed
// Incarnation returns (or, for FSM.Apply, answers with). The node's goroutines that are still
// running see it and wind down; nothing they do reaches a disk, a peer or the checker.
var ErrCrashed = errors.New("raftest: node crashed")

// CrashPoint names an operation a node can be made to crash inside (see Incarnation.CrashAt).
type CrashPoint int

// The crash points. Each covers every caller of the operation: StoreLogs covers the leader's
// writer and a follower's append; DeleteRange covers log compaction after a snapshot,
// conflict truncation and the discarding of the log behind an installed or restored snapshot;
// the snapshot points cover FSMSnapshot.Persist, the receiving side of InstallSnapshot and the
// leader's Restore; FSM Restore covers InstallSnapshot on a follower, Restore on the leader
// and the restore at start.
const (
	// CrashInStoreLogs crashes inside LogStore.StoreLogs: a seeded prefix of the batch
	// survives, possibly none of it, possibly all of it.
	CrashInStoreLogs CrashPoint = iota + 1
	// CrashInDeleteRange crashes inside LogStore.DeleteRange: the log is as before or as
	// after the call (seeded).
	CrashInDeleteRange
	// CrashInStableSet crashes inside StableStore.Set or SetUint64: the old or the new value
	// survives (seeded).
	CrashInStableSet
	// CrashInSnapshotWrite crashes inside a SnapshotSink.Write: the snapshot never exists.
	CrashInSnapshotWrite
	// CrashInSnapshotClose crashes inside SnapshotSink.Close: the snapshot exists or not
	// (seeded).
	CrashInSnapshotClose
	// CrashInFSMApply crashes inside FSM.Apply (or ApplyBatch), before the entry is applied.
	CrashInFSMApply
	// CrashInFSMRestore crashes inside FSM.Restore.
	CrashInFSMRestore
	// CrashInInstallSnapshot crashes the receiver of an InstallSnapshot at a seeded step of
	// handling it: one of the store and FSM operations the install makes (writing the
	// snapshot, closing it, restoring the FSM, discarding the log), or just before its answer
	// leaves.
	CrashInInstallSnapshot
)

var crashPointNames = map[CrashPoint]string{
	CrashInStoreLogs:       "StoreLogs",
	CrashInDeleteRange:     "DeleteRange",
	CrashInStableSet:       "StableStore.Set",
	CrashInSnapshotWrite:   "SnapshotSink.Write",
	CrashInSnapshotClose:   "SnapshotSink.Close",
	CrashInFSMApply:        "FSM.Apply",
	CrashInFSMRestore:      "FSM.Restore",
	CrashInInstallSnapshot: "InstallSnapshot",
}

// CrashPoints lists every crash point, for randomized tests to draw from.
func CrashPoints() []CrashPoint {
	return []CrashPoint{CrashInStoreLogs, CrashInDeleteRange, CrashInStableSet, CrashInSnapshotWrite,
		CrashInSnapshotClose, CrashInFSMApply, CrashInFSMRestore, CrashInInstallSnapshot}
}

func (p CrashPoint) String() string {
	if s, ok := crashPointNames[p]; ok {
		return s
	}
	return fmt.Sprintf("CrashPoint(%d)", int(p))
}

// DiskFaults make a node's disk slow. Every synced write (StoreLogs, DeleteRange,
// StableStore sets, the Close of a snapshot sink; a sink's Write is buffered) waits a latency drawn uniformly from [MinLatency, MaxLatency],
// and with probability StallRate it stalls for Stall on top. The zero value is an instant
// disk. Reads are never delayed (the page cache serves them).
//
// DeleteRange (log compaction, conflict truncation, discarding the log behind an installed or
// restored snapshot) waits too only with SlowDeleteRange, so a test that slows a disk to delay
// appends does not also delay compaction unless it asks; the randomized chaos tests turn it
// on. Code that holds a mutex across a slow DeleteRange, which another goroutine then waits
// for, freezes a testing/synctest bubble: a goroutine waiting for a mutex is not durably
// blocked, so virtual time stops (raft did this until issue 10's fix).
type DiskFaults struct {
	MinLatency, MaxLatency time.Duration
	StallRate              float64
	Stall                  time.Duration
	SlowDeleteRange        bool
}

// diskWrite says how a write meets the disk's latency.
type diskWrite int

const (
	buffered diskWrite = iota // no latency: a buffered write (a snapshot sink's Write)
	synced                    // the disk's latency and stalls
	deletion                  // like synced, but only with DiskFaults.SlowDeleteRange
)

// FSMFaults make a node's FSM slow: each applied entry costs a latency drawn uniformly from
// [MinLatency, MaxLatency], and a restore costs MaxLatency. The zero value is an instant FSM.
type FSMFaults struct {
	MinLatency, MaxLatency time.Duration
}

// Incarnation is one run of a node, from its start to its crash. Build a raft.Raft from
// stores, an FSM and a transport wrapped by one Incarnation (LogStore, StableStore,
// SnapshotStore, FSM, Transport); Crash then kills that run the way a power cut kills a
// process:
//
//   - It does not wait for anything in flight. A StoreLogs in progress keeps a seeded prefix
//     of its batch (possibly nothing); a DeleteRange or a StableStore set in progress keeps
//     the state before or after it; a snapshot whose sink was not closed never exists, and
//     one whose Close was in progress exists or not. What a call finished before the crash
//     stays: a log write is durable once StoreLogs returned, a snapshot once its sink's Close
//     returned, term and vote once Set returned.
//   - Once Crash returned, the wrapped stores are never touched again by this incarnation:
//     every later call fails with ErrCrashed, so the inner stores (the "disk") can be handed
//     to the next incarnation.
//   - Nothing the incarnation sends afterwards is delivered, nothing reaches it (requests, and
//     answers to its own calls), and its FSM applies nothing more.
//
// The node's goroutines are not stopped: they keep running until they notice the errors and
// stop on their own (raft stops a node whose disk fails), possibly much later, as a stale
// goroutine of a real node would. They can no longer change anything durable or visible.
//
// An Incarnation can also be made to crash itself inside a chosen operation (CrashAt), and to
// run with a slow disk (SetDiskFaults) and a slow FSM (SetFSMFaults). Its random choices come
// from the seed it was made with. All methods are safe for concurrent use.
type Incarnation struct {
	// mu is held shared across every call that changes an inner store and exclusively by
	// Crash, so once Crash returned no such call is running or can start.
	mu      sync.RWMutex
	crashed atomic.Bool   // set under mu held exclusively
	down    chan struct{} // closed by Crash
	// dying is set when an armed crash point is hit, just before that goroutine calls Crash:
	// from then on Crashed reports true, so a test never takes the node for running (and
	// leaves it down) in between.
	dying atomic.Bool
	// over is closed once a crash fully took effect (transports closed, onCrash run): a
	// Crash that finds another one under way returns only then.
	over chan struct{}

	// pmu guards the fields below it. It is never held while waiting.
	pmu      sync.Mutex
	rng      *rand.Rand
	pending  map[uint64]func(rng *rand.Rand) // in-flight writes, settled by Crash with pmu held
	nextID   uint64
	sinks    map[*crashSink]struct{} // open snapshot sinks, cancelled by Crash
	disk     DiskFaults
	fsm      FSMFaults
	armed    CrashPoint // 0 when no crash point is armed
	armAfter int        // operations of the armed point still let through
	install  int        // >0: operations left before the InstallSnapshot crash; -1: at the answer

	transports []*crashTransport // guarded by pmu; closed by Crash
	onCrash    func()            // called once, after the crash took effect; may be nil
}

// NewIncarnation returns a running incarnation whose random choices come from seed. onCrash,
// if not nil, runs once after a crash took effect, on the goroutine that crashed it (the test,
// or a node goroutine that hit an armed crash point); it must not block or call Crash.
func NewIncarnation(seed int64, onCrash func()) *Incarnation {
	return &Incarnation{
		down:    make(chan struct{}),
		over:    make(chan struct{}),
		rng:     rand.New(rand.NewSource(seed)),
		pending: make(map[uint64]func(*rand.Rand)),
		sinks:   make(map[*crashSink]struct{}),
		onCrash: onCrash,
	}
}

// Crash kills the incarnation now; see Incarnation. It returns once the crash took effect,
// also when another goroutine (one that hit an armed crash point) crashed it first. Calling
// it again does nothing.
func (inc *Incarnation) Crash() {
	inc.mu.Lock()
	if inc.crashed.Load() {
		inc.mu.Unlock()
		<-inc.over
		return
	}
	inc.pmu.Lock()
	for id, settle := range inc.pending {
		settle(inc.rng)
		delete(inc.pending, id)
	}
	for s := range inc.sinks {
		_ = s.inner.Cancel() // never closed: the snapshot does not exist
		delete(inc.sinks, s)
	}
	transports := inc.transports
	inc.pmu.Unlock()
	inc.crashed.Store(true)
	close(inc.down)
	inc.mu.Unlock()
	for _, t := range transports {
		t.closeInner()
	}
	if inc.onCrash != nil {
		inc.onCrash()
	}
	close(inc.over)
}

// Crashed reports whether the incarnation crashed, or is crashing: it hit an armed crash
// point and the crash is under way.
func (inc *Incarnation) Crashed() bool { return inc.crashed.Load() || inc.dying.Load() }

// Down returns a channel closed when the incarnation crashes.
func (inc *Incarnation) Down() <-chan struct{} { return inc.down }

// CrashAt arms a crash inside the operation p: the incarnation lets after such operations
// through, then crashes inside the next one. A later CrashAt replaces an armed one; p zero
// disarms.
func (inc *Incarnation) CrashAt(p CrashPoint, after int) {
	inc.pmu.Lock()
	defer inc.pmu.Unlock()
	inc.armed, inc.armAfter, inc.install = p, max(after, 0), 0
}

// Armed returns the armed crash point, or 0.
func (inc *Incarnation) Armed() CrashPoint {
	inc.pmu.Lock()
	defer inc.pmu.Unlock()
	return inc.armed
}

// SetDiskFaults sets the disk's latency and stalls for later writes.
func (inc *Incarnation) SetDiskFaults(f DiskFaults) {
	inc.pmu.Lock()
	inc.disk = f
	inc.pmu.Unlock()
}

// SetFSMFaults sets the FSM's latency for later applies and restores.
func (inc *Incarnation) SetFSMFaults(f FSMFaults) {
	inc.pmu.Lock()
	inc.fsm = f
	inc.pmu.Unlock()
}

// hitLocked reports whether operation p crashes the incarnation now, counting it against an
// armed crash point. Called with pmu held.
func (inc *Incarnation) hitLocked(p CrashPoint) bool {
	if inc.install > 0 {
		// An InstallSnapshot is being handled and its crash is armed: count its operations.
		if inc.install--; inc.install == 0 {
			inc.armed = 0
			inc.dying.Store(true)
			return true
		}
		return false
	}
	if p == 0 || inc.armed != p || inc.armed == CrashInInstallSnapshot {
		return false
	}
	if inc.armAfter > 0 {
		inc.armAfter--
		return false
	}
	inc.armed = 0
	inc.dying.Store(true)
	return true
}

// beginInstall is called when an InstallSnapshot request reaches the node: with the
// InstallSnapshot crash armed and due, the crash is scheduled at a seeded step of it.
func (inc *Incarnation) beginInstall() {
	inc.pmu.Lock()
	defer inc.pmu.Unlock()
	if inc.armed != CrashInInstallSnapshot || inc.install != 0 {
		return
	}
	if inc.armAfter > 0 {
		inc.armAfter--
		return
	}
	// Writing, closing, restoring, discarding: a handful of operations; past them, the
	// crash comes just before the answer leaves.
	inc.install = 1 + inc.rng.Intn(6)
}

// endInstall is called when the node answers an InstallSnapshot; it reports whether the
// scheduled crash is due now, before the answer leaves.
func (inc *Incarnation) endInstall() bool {
	inc.pmu.Lock()
	defer inc.pmu.Unlock()
	if inc.install == 0 || inc.armed != CrashInInstallSnapshot {
		return false
	}
	inc.install, inc.armed = 0, 0
	inc.dying.Store(true)
	return true
}

// drawLatencyLocked draws a latency from [lo, hi].
func (inc *Incarnation) drawLatencyLocked(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return max(lo, 0)
	}
	return lo + time.Duration(inc.rng.Int63n(int64(hi-lo)+1))
}

// sleep waits d, or until the incarnation crashes (then it returns ErrCrashed).
func (inc *Incarnation) sleep(d time.Duration) error {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-inc.down:
		}
	}
	if inc.crashed.Load() {
		return ErrCrashed
	}
	return nil
}

// write runs one write to an inner store: it registers settle (what a crash during the write
// leaves on the disk), waits the disk's latency as kind says, crashes there if p is due, and otherwise runs do with the inner
// stores protected from a concurrent crash.
func (inc *Incarnation) write(p CrashPoint, kind diskWrite, settle func(rng *rand.Rand), do func() error) error {
	inc.pmu.Lock()
	if inc.crashed.Load() {
		inc.pmu.Unlock()
		return ErrCrashed
	}
	id := inc.nextID
	inc.nextID++
	inc.pending[id] = settle
	hit := inc.hitLocked(p)
	var d time.Duration
	if kind == synced || kind == deletion && inc.disk.SlowDeleteRange {
		d = inc.drawLatencyLocked(inc.disk.MinLatency, inc.disk.MaxLatency)
		if inc.disk.StallRate > 0 && inc.rng.Float64() < inc.disk.StallRate {
			d += inc.disk.Stall
		}
	}
	inc.pmu.Unlock()
	if hit {
		inc.Crash() // settles this write
		return ErrCrashed
	}
	if err := inc.sleep(d); err != nil {
		return err // the crash settled this write
	}
	inc.mu.RLock()
	defer inc.mu.RUnlock()
	if inc.crashed.Load() {
		return ErrCrashed
	}
	inc.pmu.Lock()
	delete(inc.pending, id)
	inc.pmu.Unlock()
	return do()
}

// read runs a read of an inner store, refused once crashed.
func (inc *Incarnation) read(do func() error) error {
	if inc.crashed.Load() {
		return ErrCrashed
	}
	return do()
}

// fsmCall prepares a call into the FSM: it waits the FSM's latency for n entries and crashes
// there if p is due. It returns ErrCrashed if the call must not reach the FSM.
func (inc *Incarnation) fsmCall(p CrashPoint, n int) error {
	inc.pmu.Lock()
	if inc.crashed.Load() {
		inc.pmu.Unlock()
		return ErrCrashed
	}
	hit := inc.hitLocked(p)
	var d time.Duration
	if p == CrashInFSMRestore {
		d = inc.fsm.MaxLatency
	} else {
		for range n {
			d += inc.drawLatencyLocked(inc.fsm.MinLatency, inc.fsm.MaxLatency)
		}
	}
	inc.pmu.Unlock()
	if hit {
		inc.Crash()
		return ErrCrashed
	}
	return inc.sleep(d)
}
