package raft_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/wal"
)

// Start-up reconciliation of the snapshot and the log (issue 10, bug 3; issue 16, item 2).
// Each case builds the stores a crash at one point leaves behind, directly, then starts a
// single node on them. A node that may run must start from the right snapshot and log, and
// then commit a new entry: that proves the log store accepts the entry after the snapshot
// (the node would stop with an out-of-order write otherwise). A node whose stores lost
// something must refuse to start with ErrStorageDamaged.

// startFSM records what it applies and what it was restored from.
type startFSM struct {
	mu       sync.Mutex
	restored string
	applied  []uint64
}

func (f *startFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, l.Index)
	return nil
}

func (f *startFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("not used") }

func (f *startFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.restored = string(b)
	f.mu.Unlock()
	return nil
}

// startStores is one kind of store set a node can start on.
type startStores struct {
	name string
	open func(t *testing.T, dir string) (raft.LogStore, raft.StableStore, raft.SnapshotStore, func())
}

var startStoreKinds = []startStores{
	{"inmem", func(t *testing.T, dir string) (raft.LogStore, raft.StableStore, raft.SnapshotStore, func()) {
		s := raft.NewInmemStore()
		return s, s, raft.NewInmemSnapshotStore(), func() {}
	}},
	{"wal+file", func(t *testing.T, dir string) (raft.LogStore, raft.StableStore, raft.SnapshotStore, func()) {
		s, err := wal.Open(filepath.Join(dir, "wal"), wal.WithNoSync())
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := raft.NewFileSnapshotStore(dir, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s, s, snaps, func() { s.Close(); closeIfCloser(snaps) }
	}},
}

// closeIfCloser releases a snapshot store that holds resources (FileSnapshotStore's lock).
func closeIfCloser(v any) {
	if c, ok := v.(io.Closer); ok {
		c.Close()
	}
}

const startID = raft.ServerID("n1")

// startConfig is the single-voter configuration stored in every snapshot of these tests.
var startConfig = raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: startID, Address: "n1"}}}

// putSnapshot stores a snapshot at index/term whose data names it.
func putSnapshot(t *testing.T, snaps raft.SnapshotStore, index, term uint64) string {
	t.Helper()
	sink, err := snaps.Create(raft.SnapshotVersion, index, term, startConfig, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(sink, "snapshot-%d", index); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	return sink.ID()
}

// putLog stores entries [first, last] with term termAt(index); index 1 is the configuration.
func putLog(t *testing.T, logs raft.LogStore, first, last uint64, termAt func(uint64) uint64) {
	t.Helper()
	var batch []*raft.Log
	for i := first; i <= last; i++ {
		l := &raft.Log{Index: i, Term: termAt(i), Type: raft.LogCommand, Data: []byte(fmt.Sprintf("e%d", i))}
		if i == 1 {
			l.Type, l.Data = raft.LogConfiguration, raft.EncodeConfiguration(startConfig)
		}
		batch = append(batch, l)
	}
	if err := logs.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
}

func term(t uint64) func(uint64) uint64 { return func(uint64) uint64 { return t } }

// startOnStores starts a single node on the stores.
func startOnStores(t *testing.T, fsm raft.FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) (*raft.Raft, error) {
	t.Helper()
	trans, err := raft.NewInmemNetwork().NewTransport("n1")
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.DefaultConfig()
	conf.LocalID = startID
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.Logger = testLogger(t)
	r, err := raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
	if err != nil {
		trans.Close()
		return nil, err
	}
	t.Cleanup(func() { r.Shutdown().Error() })
	return r, nil
}

// commitOne waits for r to lead and commits one entry through it.
func commitOne(t *testing.T, r *raft.Raft) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatalf("no leader within 10s (state %v, shutdown cause %v)", r.State(), r.ShutdownCause())
		}
		select {
		case <-r.LeaderCh():
		case <-r.Stopped():
			t.Fatalf("node stopped: %v", r.ShutdownCause())
		case <-time.After(20 * time.Millisecond):
		}
	}
	f := r.Apply([]byte("after-restart"), 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("Apply after start-up: %v (shutdown cause %v)", err, r.ShutdownCause())
	}
	return f.Index()
}

// reconcileCase is one crash point: the log holds [logFirst, logLast] at logTerm, beside a
// snapshot at index 10, term 2 (none with noSnapshot); the stored term is 2.
type reconcileCase struct {
	name                       string
	logFirst, logLast, logTerm uint64
	noSnapshot                 bool
	// wantFirst/wantLast are the log bounds right after NewRaft; wantLastIndex what the node
	// reports as its last index.
	wantFirst, wantLast, wantLastIndex uint64
	wantDamaged                        bool
}

var reconcileCases = []reconcileCase{
	// A follower stored a snapshot received by InstallSnapshot and crashed before discarding
	// its old, shorter log (issue 10 bug 3a).
	{name: "InstallSnapshotStoredLogNotDiscarded", logFirst: 1, logLast: 6, logTerm: 1, wantLastIndex: 10},
	// A leader applied and snapshotted entries followers had committed while its own write of
	// them was in flight, then crashed (issue 10 bug 3b).
	{name: "LeaderSnapshotPastItsOwnLog", logFirst: 1, logLast: 8, logTerm: 2, wantLastIndex: 10},
	// The old log has another term at the snapshot's index: a conflicting suffix that the
	// crash kept from being discarded (Figure 13, step 7).
	{name: "ConflictingLogAtSnapshotIndex", logFirst: 1, logLast: 14, logTerm: 1, wantLastIndex: 10},
	// A snapshot taken, the log not yet compacted: the log continues it and is kept.
	{name: "LogHoldsSnapshotEntry", logFirst: 1, logLast: 14, logTerm: 2, wantFirst: 1, wantLast: 14, wantLastIndex: 14},
	// Compacted exactly up to the snapshot.
	{name: "LogStartsRightAfterSnapshot", logFirst: 11, logLast: 14, logTerm: 2, wantFirst: 11, wantLast: 14, wantLastIndex: 14},
	{name: "GapBetweenSnapshotAndLog", logFirst: 13, logLast: 20, logTerm: 2, wantDamaged: true},
	// The snapshot directory was lost; the log was compacted.
	{name: "CompactedLogWithoutSnapshot", logFirst: 5, logLast: 20, logTerm: 2, noSnapshot: true, wantDamaged: true},
}

// startAfterCrash opens stores of kind in dir with the stored term 2, lets crashed write them
// as a crash left them, and starts a node on them. With wantDamaged it checks that start-up
// refused with ErrStorageDamaged and returns a nil node; else start-up must succeed.
func startAfterCrash(t *testing.T, kind startStores, dir string, wantDamaged bool, crashed func(logs raft.LogStore, snaps raft.SnapshotStore)) (*raft.Raft, *startFSM) {
	t.Helper()
	logs, stable, snaps, done := kind.open(t, dir)
	t.Cleanup(done)
	if err := stable.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	crashed(logs, snaps)
	fsm := &startFSM{}
	r, err := startOnStores(t, fsm, logs, stable, snaps)
	if wantDamaged {
		if !errors.Is(err, raft.ErrStorageDamaged) {
			t.Fatalf("NewRaft: %v, want ErrStorageDamaged", err)
		}
		return nil, nil
	}
	if err != nil {
		t.Fatalf("NewRaft: %v", err)
	}
	return r, fsm
}

func TestStartup_ReconcilesSnapshotAndLogAtEachCrashPoint(t *testing.T) {
	for _, kind := range startStoreKinds {
		for _, tc := range reconcileCases {
			t.Run(kind.name+"/"+tc.name, func(t *testing.T) {
				var logs raft.LogStore
				r, fsm := startAfterCrash(t, kind, t.TempDir(), tc.wantDamaged, func(l raft.LogStore, snaps raft.SnapshotStore) {
					logs = l
					putLog(t, l, tc.logFirst, tc.logLast, term(tc.logTerm))
					if !tc.noSnapshot {
						putSnapshot(t, snaps, 10, 2)
					}
				})
				if r == nil {
					return
				}
				checkBounds(t, logs, tc.wantFirst, tc.wantLast)
				if got := r.LastIndex(); got != tc.wantLastIndex {
					t.Fatalf("LastIndex after start-up = %d, want %d", got, tc.wantLastIndex)
				}
				idx := commitOne(t, r)
				if idx <= tc.wantLastIndex {
					t.Fatalf("new entry committed at %d, not after %d", idx, tc.wantLastIndex)
				}
				fsm.mu.Lock()
				defer fsm.mu.Unlock()
				if fsm.restored != "snapshot-10" {
					t.Fatalf("FSM restored from %q, want snapshot-10", fsm.restored)
				}
				for _, i := range fsm.applied {
					if i <= 10 {
						t.Fatalf("FSM applied entry %d, which the snapshot covers", i)
					}
				}
			})
		}
	}
}

// checkBounds checks the log store's bounds.
func checkBounds(t *testing.T, logs raft.LogStore, first, last uint64) {
	t.Helper()
	f, _ := logs.FirstIndex()
	l, _ := logs.LastIndex()
	if f != first || l != last {
		t.Fatalf("log bounds after start-up [%d, %d], want [%d, %d]", f, l, first, last)
	}
}

// corruptFileSnapshot flips a byte of a FileSnapshotStore snapshot's data.
func corruptFileSnapshot(t *testing.T, dir, id string) {
	t.Helper()
	path := filepath.Join(dir, "snapshots", id, "state.bin")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Issue 16, item 2: with the newest snapshot corrupt, start-up used to restore an older one
// without checking that the log still reached back to it; with default trailing logs the
// entries in between were gone and the first commit stopped the node.
func TestStartup_FallbackToOlderSnapshotOnlyWhenTheLogJoinsIt(t *testing.T) {
	cases := []struct {
		name        string
		first, last uint64
		wantDamaged bool
	}{
		{"LogReachesBackToOlder", 4, 20, false},
		{"GapAfterOlder", 9, 20, true},
		{"EmptyLogLostNewerState", 0, 0, true},
		{"LogEndsBeforeNewer", 4, 8, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r, fsm := startAfterCrash(t, startStoreKinds[1], dir, tc.wantDamaged, func(logs raft.LogStore, snaps raft.SnapshotStore) {
				putSnapshot(t, snaps, 5, 2)
				newer := putSnapshot(t, snaps, 10, 2)
				corruptFileSnapshot(t, dir, newer)
				if tc.last > 0 {
					putLog(t, logs, tc.first, tc.last, term(2))
				}
			})
			if r == nil {
				return
			}
			commitOne(t, r)
			fsm.mu.Lock()
			defer fsm.mu.Unlock()
			if fsm.restored != "snapshot-5" {
				t.Fatalf("restored %q, want the older snapshot-5", fsm.restored)
			}
			if want := tc.last - 5 + 1; uint64(len(fsm.applied)) < want || fsm.applied[0] != 6 {
				t.Fatalf("applied %v, want 6..%d and the new entry", fsm.applied, tc.last)
			}
		})
	}
}

// A node whose stable store was lost while its log and snapshots survived no longer knows its
// term or vote; it must not start (it could vote twice in one term).
func TestStartup_LostTermAndVoteIsStorageDamage(t *testing.T) {
	for _, kind := range startStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			logs, stable, snaps, done := kind.open(t, t.TempDir())
			defer done()
			putLog(t, logs, 1, 14, term(2))
			putSnapshot(t, snaps, 10, 2)
			if err := stable.SetUint64([]byte("CurrentTerm"), 1); err != nil { // rolled back
				t.Fatal(err)
			}
			if _, err := startOnStores(t, &startFSM{}, logs, stable, snaps); !errors.Is(err, raft.ErrStorageDamaged) {
				t.Fatalf("NewRaft with term 1 below the log's term 2: %v, want ErrStorageDamaged", err)
			}
		})
	}
}
