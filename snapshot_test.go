package raft_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Snapshot tests (docs/design.md, section 8; scenario S1 of section 12, and docs/snapshots.md).
// Each checks that a snapshot really was taken or installed (Stats, the log's first index,
// the FSM's restore count) rather than assuming it.

// snapFSM is a RecordingFSM that counts its restores and can hold Persist until a test lets
// it go.
type snapFSM struct {
	*raftest.RecordingFSM
	restores atomic.Int32
	// persistGate, if set, is called at the start of every Persist (on the snapshot
	// goroutine); it returns when Persist may go on.
	persistGate func()
	// restoreDelay is how long the next Restore sleeps first (a slow FSM; virtual time in a
	// bubble).
	restoreDelay atomic.Int64
}

func newSnapFSM(gate func()) *snapFSM {
	return &snapFSM{RecordingFSM: raftest.NewRecordingFSM(), persistGate: gate}
}

// Restore implements raft.FSM.
func (f *snapFSM) Restore(rc io.ReadCloser) error {
	f.restores.Add(1)
	time.Sleep(time.Duration(f.restoreDelay.Swap(0)))
	return f.RecordingFSM.Restore(rc)
}

// Snapshot implements raft.FSM.
func (f *snapFSM) Snapshot() (raft.FSMSnapshot, error) {
	inner, err := f.RecordingFSM.Snapshot()
	if err != nil {
		return nil, err
	}
	return gatedSnapshot{FSMSnapshot: inner, gate: f.persistGate}, nil
}

type gatedSnapshot struct {
	raft.FSMSnapshot
	gate func()
}

func (g gatedSnapshot) Persist(sink raft.SnapshotSink) error {
	if g.gate != nil {
		g.gate()
	}
	return g.FSMSnapshot.Persist(sink)
}

// snapOpts is a cluster that snapshots often and keeps a short log behind each snapshot.
func snapOpts(nodes int) raftest.Options {
	return raftest.Options{
		Nodes:  nodes,
		NewFSM: func(raft.ServerID) raft.FSM { return newSnapFSM(nil) },
		Config: func(c *raft.Config) {
			c.TrailingLogs = snapTrailing
			c.SnapshotThreshold = 16
			c.SnapshotInterval = 20 * time.Millisecond
		},
	}
}

const snapTrailing = 8

func fsmOf(c *raftest.Cluster, i int) *snapFSM { return c.Node(i).FSM().(*snapFSM) }

// commands returns the commands node i's FSM holds, in order.
func commands(c *raftest.Cluster, i int) []string {
	var out []string
	for _, e := range fsmOf(c, i).Entries() {
		out = append(out, string(e.Data))
	}
	return out
}

// statU reads a numeric Stats key of node i.
func statU(t *testing.T, c *raftest.Cluster, i int, key string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(c.Node(i).Raft().Stats()[key], 10, 64)
	if err != nil {
		t.Fatalf("stats %s of node %d: %v", key, i, err)
	}
	return v
}

// firstIndex is the first index in node i's log store (0 when empty).
func firstIndex(t *testing.T, c *raftest.Cluster, i int) uint64 {
	t.Helper()
	first, err := c.Node(i).Logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	return first
}

// applyN applies n commands named prefix-0... and returns the last index.
func applyN(t *testing.T, c *raftest.Cluster, prefix string, n int) uint64 {
	t.Helper()
	var last uint64
	for i := 0; i < n; i++ {
		last = mustApply(t, c, fmt.Sprintf("%s-%d", prefix, i)).Index()
	}
	return last
}

// sameFSMs fails unless every running node's FSM holds the commands of node ref.
func sameFSMs(t *testing.T, c *raftest.Cluster, ref int) {
	t.Helper()
	want := commands(c, ref)
	for i, n := range c.Nodes() {
		if n.Raft() == nil {
			continue
		}
		if got := commands(c, i); !slices.Equal(got, want) {
			t.Fatalf("node %d holds %d commands %v\nnode %d holds %d commands %v", i, len(got), got, ref, len(want), want)
		}
	}
}

// checkCompactionBound fails if node i's log lost an entry that is in no snapshot or inside
// the trailing window: everything before the first index must be at or below
// snapshotIndex - trailing. (A follower that installed a snapshot holds no trailing window:
// it never had those entries.)
func checkCompactionBound(t *testing.T, c *raftest.Cluster, i int, trailing uint64) {
	t.Helper()
	first := firstIndex(t, c, i) // read first: the snapshot index only grows
	snap := statU(t, c, i, "last_snapshot_index")
	if first > 1 && first-1 > snap-min(snap, trailing) {
		t.Fatalf("node %d compacted up to %d with its snapshot at %d and %d trailing entries", i, first-1, snap, trailing)
	}
}

// applyUntilAllCompacted applies n commands, then waits until every node snapshotted on its
// own (as it does once SnapshotThreshold entries were applied) close to the last one and
// compacted its log.
func applyUntilAllCompacted(t *testing.T, c *raftest.Cluster, n int) {
	t.Helper()
	c.WaitLeader(waitLong)
	last := applyN(t, c, "cmd", n)
	c.WaitApplied(last, waitLong)
	c.WaitFor(waitLong, "every node to snapshot and compact", func() bool {
		for i := range c.Nodes() {
			if statU(t, c, i, "last_snapshot_index") < last-16 || firstIndex(t, c, i) <= 1 {
				return false
			}
		}
		return true
	})
}

// TestSnapshot_CompactsTheLog: snapshots compact the log (scenario S1, docs/design.md
// sections 8 and 12).
func TestSnapshot_CompactsTheLog(t *testing.T) {
	raftest.Run(t, snapOpts(3), func(t *testing.T, c *raftest.Cluster) {
		applyUntilAllCompacted(t, c, 100)
		for i := range c.Nodes() {
			checkCompactionBound(t, c, i, snapTrailing)
			if got := len(commands(c, i)); got != 100 {
				t.Fatalf("node %d holds %d commands after compaction, want 100", i, got)
			}
		}
		c.CheckSafety()
	})
}

// TestSnapshot_FarBehindFollowerReceivesInstallSnapshot: a follower behind the compaction
// receives InstallSnapshot (scenario S1, docs/design.md sections 8 and 12).
func TestSnapshot_FarBehindFollowerReceivesInstallSnapshot(t *testing.T) {
	raftest.Run(t, snapOpts(3), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		behind := others(c, leader)[0]
		c.Isolate(behind)
		last := applyN(t, c, "cmd", 100)
		behindLast := c.Node(behind).Raft().LastIndex()
		c.WaitFor(waitLong, "the leader to compact past the isolated follower's log", func() bool {
			return firstIndex(t, c, leader) > behindLast+1
		})
		c.Heal()
		c.WaitApplied(last, waitLong)
		if n := fsmOf(c, behind).restores.Load(); n < 1 {
			t.Fatalf("the lagging follower caught up without a snapshot restore (%d restores)", n)
		}
		if snap := statU(t, c, behind, "last_snapshot_index"); snap <= behindLast {
			t.Fatalf("the lagging follower's snapshot index %d is not past its old last index %d", snap, behindLast)
		}
		g := mustApply(t, c, "after")
		c.WaitApplied(g.Index(), waitLong)
		sameFSMs(t, c, leader)
		checkCompactionBound(t, c, behind, 0)
		c.CheckSafety()
	})
}

// manualSnapshots turns automatic snapshots off, so a test decides when they happen.
func manualSnapshots(opts raftest.Options) raftest.Options {
	base := opts.Config
	opts.Config = func(c *raft.Config) {
		base(c)
		c.SnapshotThreshold = 1 << 40
	}
	return opts
}

// TestSnapshot_NodeRestartsFromSnapshotAndLog: a node restarts from its snapshot plus the log
// tail (scenario S1, docs/design.md sections 8 and 12).
func TestSnapshot_NodeRestartsFromSnapshotAndLog(t *testing.T) {
	raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		node := others(c, leader)[0]
		last := applyN(t, c, "cmd", 60)
		c.WaitApplied(last, waitLong)
		if err := c.Node(node).Raft().Snapshot().Error(); err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		if first := firstIndex(t, c, node); first <= 1 {
			t.Fatalf("log starts at %d after a snapshot at %d: nothing compacted", first, last)
		}
		// Entries after the snapshot, so the restart replays a log tail on top of it.
		last = applyN(t, c, "tail", 5)
		c.WaitApplied(last, waitLong)
		c.Restart(node)
		if n := fsmOf(c, node).restores.Load(); n != 1 {
			t.Fatalf("the restarted node restored %d snapshots at start, want 1", n)
		}
		c.WaitApplied(last, waitLong)
		sameFSMs(t, c, leader)
		c.CheckSafety()
	})
}

// fileSnapshotStores gives every node an InmemStore for its log and a FileSnapshotStore
// keeping two snapshots in its own directory, and returns the directories by node ID.
func fileSnapshotStores(t *testing.T, opts raftest.Options) (raftest.Options, map[raft.ServerID]string) {
	dirs := make(map[raft.ServerID]string)
	opts.NewStores = func(id raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore) {
		dirs[id] = t.TempDir()
		snaps, err := raft.NewFileSnapshotStore(dirs[id], 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		store := raft.NewInmemStore()
		return store, store, snaps
	}
	return opts, dirs
}

// corruptSnapshotData changes one character inside the first command of a RecordingFSM
// snapshot on disk, so the data still decodes (to something else) and only the CRC can
// tell.
func corruptSnapshotData(t *testing.T, dir, id string) {
	t.Helper()
	path := filepath.Join(dir, "snapshots", id, "state.bin")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(data, []byte(`"Data":"`))
	if at < 0 {
		t.Fatalf("no command in snapshot %s", id)
	}
	data[at+len(`"Data":"`)] ^= 1 // a base64 letter stays a base64 letter
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshot_CorruptNewestSnapshotFallsBackToOlder(t *testing.T) {
	opts := manualSnapshots(snapOpts(3))
	base := opts.Config
	opts.Config = func(c *raft.Config) {
		base(c)
		c.TrailingLogs = 1000 // the log still reaches back to the older snapshot
	}
	opts, dirs := fileSnapshotStores(t, opts)
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		node := others(c, leader)[0]
		var snapIndexes []uint64
		for round := 0; round < 2; round++ {
			last := applyN(t, c, fmt.Sprintf("round%d", round), 10)
			c.WaitApplied(last, waitLong)
			if err := c.Node(node).Raft().Snapshot().Error(); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			snapIndexes = append(snapIndexes, statU(t, c, node, "last_snapshot_index"))
		}
		last := applyN(t, c, "tail", 5)
		c.WaitApplied(last, waitLong)
		c.Crash(node)
		metas, err := c.Node(node).Snaps.List()
		if err != nil || len(metas) != 2 || metas[0].Index != snapIndexes[1] {
			t.Fatalf("stored snapshots %v (%v), want two, the newest at %d", metas, err, snapIndexes[1])
		}
		corruptSnapshotData(t, dirs[c.Node(node).ID], metas[0].ID)
		c.Start(node)
		if got := statU(t, c, node, "last_snapshot_index"); got != snapIndexes[0] {
			t.Fatalf("started from the snapshot at %d, want the older one at %d", got, snapIndexes[0])
		}
		c.WaitApplied(last, waitLong)
		sameFSMs(t, c, leader)
		c.CheckSafety()
	})
}

func TestSnapshot_EveryNodeRestartsFromSnapshotAndLog(t *testing.T) {
	raftest.Run(t, snapOpts(3), func(t *testing.T, c *raftest.Cluster) {
		applyUntilAllCompacted(t, c, 100)
		last := applyN(t, c, "tail", 5)
		c.WaitApplied(last, waitLong)
		for i := range c.Nodes() {
			c.Crash(i)
		}
		for i := range c.Nodes() {
			c.Start(i)
			if n := fsmOf(c, i).restores.Load(); n != 1 {
				t.Fatalf("node %d restored %d snapshots at start, want 1", i, n)
			}
		}
		c.WaitLeader(waitLong)
		g := mustApply(t, c, "after")
		c.WaitApplied(g.Index(), waitLong)
		if got := len(commands(c, 0)); got != 106 {
			t.Fatalf("node 0 holds %d commands after the restart, want 106", got)
		}
		sameFSMs(t, c, 0)
		c.CheckSafety()
	})
}

// loadGen applies a command every millisecond on one node, without waiting for each, until
// finished: a thousand applies per second of (virtual) time.
type loadGen struct {
	stop    chan struct{}
	done    chan struct{}
	futures []raft.ApplyFuture // written by the generator until done is closed
}

// startLoad starts the generator; call it inside the bubble.
func startLoad(r *raft.Raft, prefix string) *loadGen {
	l := &loadGen{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(time.Millisecond):
			}
			l.futures = append(l.futures, r.Apply([]byte(fmt.Sprintf("%s-%d", prefix, i)), waitLong))
		}
	}()
	return l
}

// finish stops the generator, fails the test if any apply failed and returns the index of
// the last one.
func (l *loadGen) finish(t *testing.T) uint64 {
	t.Helper()
	close(l.stop)
	<-l.done
	var last uint64
	for i, f := range l.futures {
		if err := f.Error(); err != nil {
			t.Fatalf("apply %d of the load failed: %v", i, err)
		}
		last = max(last, f.Index())
	}
	return last
}

func TestSnapshot_FollowerCutOffWhileLeaderCompactsCatchesUpUnderLoad(t *testing.T) {
	raftest.Run(t, snapOpts(3), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		follower := others(c, leader)[0]
		load := startLoad(c.Node(leader).Raft(), "load")
		c.WaitApplied(50, waitLong)
		c.Isolate(follower)
		cutAt := c.Node(follower).Raft().LastIndex()
		c.WaitFor(waitLong, "the leader to compact past the cut-off follower", func() bool {
			return firstIndex(t, c, leader) > cutAt+1
		})
		c.Heal()
		c.WaitFor(waitLong, "the follower to install a snapshot", func() bool {
			return fsmOf(c, follower).restores.Load() >= 1
		})
		last := load.finish(t)
		c.WaitApplied(last, waitLong)
		if got := statU(t, c, follower, "last_snapshot_index"); got <= cutAt {
			t.Fatalf("follower's snapshot index %d is not past where it was cut off (%d)", got, cutAt)
		}
		sameFSMs(t, c, leader)
		c.CheckSafety()
	})
}

// persistGate holds Persist until released. Its channels are made inside the bubble.
type persistGate struct {
	once    sync.Once
	started chan struct{} // closed when the first Persist starts
	release chan struct{} // closed by the test
}

func (g *persistGate) wait() {
	g.once.Do(func() { close(g.started) })
	<-g.release
}

func TestSnapshot_PersistDoesNotStallApplies(t *testing.T) {
	gate := &persistGate{}
	opts := manualSnapshots(snapOpts(3))
	opts.NewFSM = func(raft.ServerID) raft.FSM { return newSnapFSM(gate.wait) }
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		gate.started, gate.release = make(chan struct{}), make(chan struct{})
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		load := startLoad(r, "load")
		c.WaitApplied(50, waitLong)
		snapDone := make(chan error, 1) // the snapshot's outcome, read once
		go func() { snapDone <- r.Snapshot().Error() }()
		select {
		case <-gate.started:
		case <-time.After(waitLong):
			t.Fatal("Persist never started")
		}
		// The FSM captured its state before Persist started; this is at or past that point.
		atPersist := r.AppliedIndex()
		// Persist is held: 500 more applies (half a second of load) must go through
		// everywhere meanwhile.
		c.WaitApplied(atPersist+500, waitLong)
		close(gate.release)
		if err := <-snapDone; err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		if got := statU(t, c, leader, "last_snapshot_index"); got == 0 || got > atPersist {
			t.Fatalf("snapshot index %d, want the point in time before Persist (at most %d)", got, atPersist)
		}
		last := load.finish(t)
		c.WaitApplied(last, waitLong)
		sameFSMs(t, c, leader)
		c.CheckSafety()
	})
}

// gatedRestoreFSM is a RecordingFSM whose Restore waits, once armed, until the test releases
// it: a slow restore landing exactly where the test needs it.
type gatedRestoreFSM struct {
	*raftest.RecordingFSM
	entered chan struct{} // closed when Restore started
	release chan struct{} // closed by the test
}

func (f *gatedRestoreFSM) Restore(rc io.ReadCloser) error {
	close(f.entered)
	<-f.release
	return f.RecordingFSM.Restore(rc)
}

// blockingReader hands out data only once released: a snapshot transfer that stalls.
type blockingReader struct {
	release chan struct{}
	data    io.Reader
}

func (b *blockingReader) Read(p []byte) (int, error) {
	<-b.release
	return b.data.Read(p)
}

// A follower receiving a snapshot keeps answering heartbeats for the whole transfer and the
// FSM restore. Before the fix both ran on its main loop: a stalled transfer or a slow restore
// left the leader's heartbeats unanswered until the follower's election timer fired.
func TestInstallSnapshot_HeartbeatsAnsweredDuringTransferAndRestore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fsm := &gatedRestoreFSM{RecordingFSM: raftest.NewRecordingFSM(), entered: make(chan struct{}), release: make(chan struct{})}
		store := raft.NewInmemStore()
		quiet := func(p *scriptedPeer, rpc raft.RPC) {
			if !p.ackHeartbeat(rpc) {
				rpc.Respond(nil, errors.New("scripted peer is quiet"))
			}
		}
		c := newScriptedClusterFSM(t, fsm, store, store, quiet, quiet)
		transfer := &blockingReader{release: make(chan struct{})}
		var releaseTransfer, releaseRestore sync.Once
		// Runs before the node's shutdown (cleanups run last first): a failed check must not
		// leave the shutdown waiting on a held transfer or restore.
		t.Cleanup(func() {
			releaseTransfer.Do(func() { close(transfer.release) })
			releaseRestore.Do(func() { close(fsm.release) })
		})
		heartbeat := func(what string) {
			t.Helper()
			var resp *raft.AppendEntriesResponse
			var err error
			if !within(10*time.Millisecond, func() { resp, err = c.f.send(&raft.AppendEntriesRequest{Term: 2}) }) {
				t.Fatalf("heartbeat %s not answered within 10ms", what)
			}
			if err != nil || !resp.Success {
				t.Fatalf("heartbeat %s: %+v, %v", what, resp, err)
			}
		}
		heartbeat("before the install")
		data := []byte("[]\n") // an empty RecordingFSM
		cfg := raft.EncodeConfiguration(c.config)
		transfer.data = bytes.NewReader(data)
		installed := make(chan error, 1)
		go func() {
			req := &raft.InstallSnapshotRequest{RPCHeader: c.f.header(), SnapshotVersion: raft.SnapshotVersion, Term: 2,
				LastLogIndex: 10, LastLogTerm: 2, Configuration: cfg, ConfigurationIndex: 1, Size: int64(len(data))}
			var resp raft.InstallSnapshotResponse
			err := c.f.trans.InstallSnapshot("n1", "addr-n1", req, &resp, transfer)
			if err == nil && !resp.Success {
				err = fmt.Errorf("install refused: %+v", resp)
			}
			installed <- err
		}()
		synctest.Wait() // the transfer has started and stalls
		heartbeat("during the transfer")
		releaseTransfer.Do(func() { close(transfer.release) })
		<-fsm.entered
		heartbeat("during the FSM restore")
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 10, PrevLogTerm: 2, LeaderCommitIndex: 10,
			Entries: []*raft.Log{{Index: 11, Term: 2, Type: raft.LogCommand, Data: []byte("too early")}}}); err == nil {
			t.Fatalf("entries accepted while the snapshot is restored: %+v", resp)
		}
		releaseRestore.Do(func() { close(fsm.release) })
		if err := <-installed; err != nil {
			t.Fatalf("install: %v", err)
		}
		if got := c.r.Stats()["last_snapshot_index"]; got != "10" {
			t.Fatalf("snapshot index %s after the install, want 10", got)
		}
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 10, PrevLogTerm: 2, LeaderCommitIndex: 11,
			Entries: []*raft.Log{{Index: 11, Term: 2, Type: raft.LogCommand, Data: []byte("after")}}}); err != nil || !resp.Success {
			t.Fatalf("append after the install: %+v, %v", resp, err)
		}
		if !raftest.Eventually(time.Second, func() bool { return c.r.AppliedIndex() == 11 }) {
			t.Fatalf("applied %d, want 11", c.r.AppliedIndex())
		}
	})
}
