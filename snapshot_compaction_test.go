package raft_test

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Log compaction against the main loop's log replacements (docs/design.md, section 8).
//
// Log compaction runs on the snapshot goroutine, and its DeleteRange can take long on a slow
// disk. The main loop replaces the whole log when a follower installs a snapshot and when the
// leader restores one; it must never wait for a compaction meanwhile (issue 10: it used to
// wait on a mutex the compaction held across DeleteRange, so a slow compaction stalled
// heartbeats and appends, and froze a synctest bubble for good).
//
// These tests run in real time, not in a synctest bubble: a main loop waiting on a mutex is
// not durably blocked, so in a bubble the bug would freeze virtual time and hang the test
// instead of failing it. The randomized chaos tests cover the same ground in a bubble with
// raftest.DiskFaults.SlowDeleteRange.

// gatedDeleteStore is an InmemStore whose next DeleteRange after Arm blocks until Release:
// a compaction stuck on a slow disk. Later calls go through.
type gatedDeleteStore struct {
	*raft.InmemStore
	armed    atomic.Bool
	entered  chan struct{} // closed once the armed call started waiting
	release  chan struct{} // closed by Release
	released sync.Once
}

func newGatedDeleteStore() *gatedDeleteStore {
	return &gatedDeleteStore{InmemStore: raft.NewInmemStore(), entered: make(chan struct{}), release: make(chan struct{})}
}

// Arm makes the next DeleteRange block until Release.
func (s *gatedDeleteStore) Arm() { s.armed.Store(true) }

// Release lets the blocked DeleteRange through.
func (s *gatedDeleteStore) Release() { s.released.Do(func() { close(s.release) }) }

// DeleteRange implements raft.LogStore.
func (s *gatedDeleteStore) DeleteRange(lo, hi uint64) error {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return s.InmemStore.DeleteRange(lo, hi)
}

// gatedCluster starts a real-time cluster of three whose log stores are gatedDeleteStores,
// with manual snapshots and a short log behind each. Every gate is released at cleanup, before
// the cluster shuts down.
func gatedCluster(t *testing.T) *raftest.Cluster {
	opts := manualSnapshots(snapOpts(3))
	base := opts.Config
	opts.Config = func(c *raft.Config) {
		base(c)
		// Real time on a loaded machine: a leader change in the middle would make the
		// test take a path it did not mean to (the snapshot on a node no longer leading).
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
	}
	opts.NewStores = func(raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore) {
		s := newGatedDeleteStore()
		return s, s.InmemStore, raft.NewInmemSnapshotStore()
	}
	c := raftest.New(t, opts)
	t.Cleanup(func() {
		for _, n := range c.Nodes() {
			n.Logs.(*gatedDeleteStore).Release()
		}
	})
	return c
}

// stickCompaction starts a snapshot on node i whose compaction then waits in DeleteRange
// until the returned store is released; the channel yields the snapshot's outcome.
func stickCompaction(t *testing.T, c *raftest.Cluster, i int) (*gatedDeleteStore, <-chan error) {
	t.Helper()
	store := c.Node(i).Logs.(*gatedDeleteStore)
	store.Arm()
	done := make(chan error, 1)
	r := c.Node(i).Raft()
	go func() { done <- r.Snapshot().Error() }()
	select {
	case <-store.entered:
	case err := <-done:
		t.Fatalf("snapshot on node %d ended without compacting: %v", i, err)
	case <-time.After(waitLong):
		t.Fatalf("snapshot on node %d never reached its compaction", i)
	}
	return store, done
}

// finishCompaction releases the stuck compaction and checks that the snapshot succeeded.
func finishCompaction(t *testing.T, store *gatedDeleteStore, done <-chan error) {
	t.Helper()
	store.Release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("snapshot whose compaction was stuck: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("snapshot never finished after its compaction was released")
	}
}

// checkLogIntact fails unless node i's log store holds every entry from index from to its last
// index, with the same term as the leader's copy (a late compaction deleted none of them).
func checkLogIntact(t *testing.T, c *raftest.Cluster, i, leader int, from uint64) {
	t.Helper()
	last, err := c.Node(i).Logs.LastIndex()
	if err != nil || last < from {
		t.Fatalf("node %d: last index %d (%v), want at least %d", i, last, err, from)
	}
	leaderFirst, _ := c.Node(leader).Logs.FirstIndex()
	for idx := from; idx <= last; idx++ {
		var l raft.Log
		if err := c.Node(i).Logs.GetLog(idx, &l); err != nil {
			t.Fatalf("node %d lost entry %d of its new log: %v", i, idx, err)
		}
		if idx < leaderFirst {
			continue
		}
		var want raft.Log
		if err := c.Node(leader).Logs.GetLog(idx, &want); err == nil && want.Term != l.Term {
			t.Fatalf("node %d holds entry %d of term %d, the leader of term %d", i, idx, l.Term, want.Term)
		}
	}
}

func TestCompaction_SlowDeleteRangeNeverBlocksASnapshotInstall(t *testing.T) {
	c := gatedCluster(t)
	leader := c.WaitLeader(waitLong)
	follower := others(c, leader)[0]
	c.WaitApplied(applyN(t, c, "a", 30), waitLong)

	// The follower's compaction is stuck on its disk while it falls behind the leader's log.
	store, snapDone := stickCompaction(t, c, follower)
	c.Isolate(follower)
	applyN(t, c, "b", 40)
	if err := c.Node(leader).Raft().Snapshot().Error(); err != nil {
		t.Fatalf("leader snapshot: %v", err)
	}
	if first := firstIndex(t, c, leader); first <= c.Node(follower).Raft().LastIndex()+1 {
		t.Fatalf("leader's log starts at %d: the follower can still catch up from the log", first)
	}
	c.Heal()

	// It installs the leader's snapshot and takes the entries after it, all while its own
	// compaction still waits: its main loop never waits for that.
	restores := fsmOf(c, follower).restores.Load()
	last := applyN(t, c, "c", 10)
	if !raftest.Eventually(waitLong, func() bool { return c.Node(follower).Raft().AppliedIndex() >= last }) {
		t.Fatalf("follower %d applied up to %d, not %d, while its compaction was stuck: its main loop waits for the compaction",
			follower, c.Node(follower).Raft().AppliedIndex(), last)
	}
	if fsmOf(c, follower).restores.Load() == restores {
		t.Fatal("the follower caught up without installing a snapshot: the test did not test the install")
	}
	snapIndex := statU(t, c, follower, "last_snapshot_index")

	// The compaction finishes late, against the replaced log: it deletes nothing of it, and
	// the snapshot it took does not move the node's snapshot back.
	finishCompaction(t, store, snapDone)
	checkLogIntact(t, c, follower, leader, snapIndex+1)
	if got := statU(t, c, follower, "last_snapshot_index"); got < snapIndex {
		t.Fatalf("follower's snapshot index went back from %d to %d", snapIndex, got)
	}
	c.WaitApplied(applyN(t, c, "d", 10), waitLong)
	sameFSMs(t, c, leader)
	c.CheckSafety()
}

func TestCompaction_SlowDeleteRangeNeverBlocksARestore(t *testing.T) {
	c := gatedCluster(t)
	leader, meta, data := keptAndBackedUp(t, c, 5)
	c.WaitApplied(applyN(t, c, "lost", 30), waitLong)

	// The leader's own compaction is stuck on its disk while it restores the backup.
	store, snapDone := stickCompaction(t, c, leader)
	r := c.Node(leader).Raft()
	var err error
	if !within(waitLong, func() { err = r.Restore(meta, bytes.NewReader(data), waitLong) }) {
		t.Fatal("Restore did not return while a compaction was stuck: the leader's main loop waits for the compaction")
	}
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	restoredAt := statU(t, c, leader, "last_snapshot_index")
	last := applyN(t, c, "after", 5)

	// The compaction finishes late, against the replaced log: it deletes nothing of it, and
	// the snapshot it took does not move the node's snapshot back.
	finishCompaction(t, store, snapDone)
	checkLogIntact(t, c, leader, leader, restoredAt+1)
	if got := statU(t, c, leader, "last_snapshot_index"); got < restoredAt {
		t.Fatalf("leader's snapshot index went back from %d to %d", restoredAt, got)
	}
	c.WaitApplied(last, waitLong)
	want := []string{"kept-0", "kept-1", "kept-2", "kept-3", "kept-4", "after-0", "after-1", "after-2", "after-3", "after-4"}
	expectCommands(t, c, want)
	c.CheckSafety()
}
