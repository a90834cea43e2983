package raft_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// backup takes a snapshot on node i and returns its metadata and data.
func backup(t *testing.T, c *raftest.Cluster, i int) (*raft.SnapshotMeta, []byte) {
	t.Helper()
	meta, rc, err := c.Node(i).Raft().Snapshot().Open()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading snapshot: %v", err)
	}
	return meta, data
}

// restoreEverywhere restores the backup through the current leader, retrying on another
// leader while the outcome is unknown, as Restore's documentation asks.
func restoreEverywhere(t *testing.T, c *raftest.Cluster, meta *raft.SnapshotMeta, data []byte) {
	t.Helper()
	var err error
	ok := raftest.Eventually(waitLong, func() bool {
		leader := c.Leader()
		if leader < 0 {
			return false
		}
		err = c.Node(leader).Raft().Restore(meta, bytes.NewReader(data), time.Second)
		return err == nil
	})
	if !ok {
		t.Fatalf("restore never succeeded, last error: %v", err)
	}
}

// keptAndBackedUp elects a leader, applies kept-0 to kept-(n-1) and takes a backup on the
// leader.
func keptAndBackedUp(t *testing.T, c *raftest.Cluster, n int) (int, *raft.SnapshotMeta, []byte) {
	t.Helper()
	leader := c.WaitLeader(waitLong)
	last := applyN(t, c, "kept", n)
	c.WaitApplied(last, waitLong)
	meta, data := backup(t, c, leader)
	return leader, meta, data
}

// expectCommands fails unless every node's FSM holds want.
func expectCommands(t *testing.T, c *raftest.Cluster, want []string) {
	t.Helper()
	for i := range c.Nodes() {
		if got := commands(c, i); !slices.Equal(got, want) {
			t.Fatalf("node %d holds %v, want %v", i, got, want)
		}
	}
}

func TestRestore_ReplacesTheStateOfEveryNode(t *testing.T) {
	opts := manualSnapshots(snapOpts(3))
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 5)
		last := applyN(t, c, "lost", 30)
		c.WaitApplied(last, waitLong)
		r := c.Node(leader).Raft()
		if err := r.Restore(meta, bytes.NewReader(data), waitLong); err != nil {
			t.Fatalf("restore: %v", err)
		}
		restoredAt := statU(t, c, leader, "last_snapshot_index")
		if restoredAt <= last {
			t.Fatalf("restored snapshot at index %d, not past the last index %d", restoredAt, last)
		}
		g := mustApply(t, c, "after")
		c.WaitApplied(g.Index(), waitLong)
		want := []string{"kept-0", "kept-1", "kept-2", "kept-3", "kept-4", "after"}
		for i := range c.Nodes() {
			if got := commands(c, i); !slices.Equal(got, want) {
				t.Fatalf("node %d holds %v after the restore, want %v", i, got, want)
			}
			if i != leader && fsmOf(c, i).restores.Load() < 1 {
				t.Fatalf("follower %d reached the restored state without installing a snapshot", i)
			}
			if got := statU(t, c, i, "last_snapshot_index"); got != restoredAt {
				t.Fatalf("node %d has snapshot index %d, want the restored %d", i, got, restoredAt)
			}
			// Nothing of the log before the restore survives anywhere.
			if first := firstIndex(t, c, i); first != 0 && first <= restoredAt {
				t.Fatalf("node %d still holds log entries from %d, before the restored snapshot %d", i, first, restoredAt)
			}
		}
		// A restart comes back to the restored state plus what followed.
		for i := range c.Nodes() {
			c.Restart(i)
		}
		c.WaitLeader(waitLong)
		c.WaitApplied(g.Index(), waitLong)
		expectCommands(t, c, want)
		c.CheckSafety()
	})
}

func TestRestore_InFlightAppliesFailWithErrAbortedByRestore(t *testing.T) {
	raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 3)
		r := c.Node(leader).Raft()
		last := r.LastIndex()
		// Cut off, the leader still dispatches commands but cannot commit them.
		c.Isolate(leader)
		var inflight []raft.ApplyFuture
		for i := 0; i < 5; i++ {
			inflight = append(inflight, r.Apply([]byte(fmt.Sprintf("inflight-%d", i)), 0))
		}
		c.WaitFor(waitLong, "the commands to be dispatched", func() bool { return r.LastIndex() >= last+5 })
		err := r.Restore(meta, bytes.NewReader(data), 50*time.Millisecond)
		if err == nil {
			t.Fatal("a restore on a leader cut off from every follower reported success")
		}
		if !errors.Is(err, raft.ErrTimeout) && !errors.Is(err, raft.ErrLeadershipLost) {
			t.Fatalf("restore without a quorum: %v, want ErrTimeout or ErrLeadershipLost", err)
		}
		for i, f := range inflight {
			if err := f.Error(); !errors.Is(err, raft.ErrAbortedByRestore) {
				t.Fatalf("in-flight apply %d: %v, want ErrAbortedByRestore", i, err)
			}
		}
		// The outcome was unknown: restore again once the cluster is whole.
		c.Heal()
		restoreEverywhere(t, c, meta, data)
		g := mustApply(t, c, "after")
		c.WaitApplied(g.Index(), waitLong)
		expectCommands(t, c, []string{"kept-0", "kept-1", "kept-2", "after"})
		c.CheckSafety()
	})
}

func TestRestore_RefusesFollowersAndBadInputWithoutChangingAnything(t *testing.T) {
	raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 3)
		r := c.Node(leader).Raft()
		follower := c.Node(others(c, leader)[0]).Raft()
		if err := follower.Restore(meta, bytes.NewReader(data), time.Second); !errors.Is(err, raft.ErrNotLeader) {
			t.Fatalf("restore on a follower: %v, want ErrNotLeader", err)
		}
		short := *meta
		short.Size--
		future := *meta
		future.Version = raft.SnapshotVersion + 1
		bad := map[string]func() error{
			"data longer than Size":  func() error { return r.Restore(&short, bytes.NewReader(data), time.Second) },
			"data shorter than Size": func() error { return r.Restore(meta, bytes.NewReader(data[:len(data)-1]), time.Second) },
			"unknown version":        func() error { return r.Restore(&future, bytes.NewReader(data), time.Second) },
			"nil meta":               func() error { return r.Restore(nil, bytes.NewReader(data), time.Second) },
			"nil reader":             func() error { return r.Restore(meta, nil, time.Second) },
		}
		for name, restore := range bad {
			if err := restore(); !errors.Is(err, raft.ErrInvalidRestore) {
				t.Fatalf("restore with %s: %v, want ErrInvalidRestore", name, err)
			}
		}
		g := mustApply(t, c, "after")
		c.WaitApplied(g.Index(), waitLong)
		expectCommands(t, c, []string{"kept-0", "kept-1", "kept-2", "after"})
		for i := range c.Nodes() {
			if n := fsmOf(c, i).restores.Load(); n != 0 {
				t.Fatalf("node %d restored %d times after refused restores", i, n)
			}
		}
		if got := statU(t, c, leader, "last_snapshot_index"); got != meta.Index {
			t.Fatalf("leader's snapshot index moved from %d to %d", meta.Index, got)
		}
	})
}

// A leader that restores a backup and loses its quorum before the restore commits holds a
// state the cluster never agreed on. When it meets the new leader's log, which contradicts
// the restore, it must neither stop (it used to, with ErrUncommittedRestore, and needed a
// wipe) nor go on diverging: it is reset from the new leader's snapshot and ends with exactly
// the cluster's commands. With a crash point, the old leader also crashes in the middle of
// that reset (receiving the snapshot, or restoring its FSM from it) and must heal after its
// restart all the same.
func TestRestore_InterruptedRestoreResetsTheOldLeaderFromTheNewOne(t *testing.T) {
	for _, p := range []raftest.CrashPoint{0, raftest.CrashInInstallSnapshot, raftest.CrashInFSMRestore, raftest.CrashInSnapshotClose} {
		name := "no crash"
		if p != 0 {
			name = "crash in " + p.String()
		}
		t.Run(name, func(t *testing.T) { testInterruptedRestoreResets(t, p) })
	}
}

func testInterruptedRestoreResets(t *testing.T, p raftest.CrashPoint) {
	raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 5)
		applyN(t, c, "later", 3)
		r := c.Node(leader).Raft()
		c.Isolate(leader)
		if err := r.Restore(meta, bytes.NewReader(data), 200*time.Millisecond); err == nil {
			t.Fatal("a restore committed without a quorum")
		}
		restoredAt := statU(t, c, leader, "last_snapshot_index")
		c.WaitFor(waitLong, "a new leader among the others", func() bool {
			l := c.Leader()
			return l >= 0 && l != leader
		})
		f := applyN(t, c, "after", 5)
		restores := fsmOf(c, leader).restores.Load()
		if p != 0 {
			c.CrashAt(leader, p, 0)
		}
		c.Heal()
		if p != 0 {
			c.WaitFor(waitLong, "the old leader to crash inside its reset", func() bool { return !c.Node(leader).Running() })
			c.Start(leader)
		}
		got := c.WaitSameCommands(f, waitLong)
		want := []string{"kept-0", "kept-1", "kept-2", "kept-3", "kept-4", "later-0", "later-1", "later-2",
			"after-0", "after-1", "after-2", "after-3", "after-4"}
		if !slices.Equal(got, want) {
			t.Fatalf("the cluster holds %v, want %v", got, want)
		}
		r = c.Node(leader).Raft()
		if isStopped(r) {
			t.Fatalf("the old leader stopped: %v", r.ShutdownCause())
		}
		if p == 0 && fsmOf(c, leader).restores.Load() == restores {
			t.Fatal("the old leader's FSM was never restored from the new leader's snapshot")
		}
		if got := statU(t, c, leader, "last_snapshot_index"); got == restoredAt {
			t.Fatalf("the old leader still starts from the uncommitted snapshot at %d", got)
		}
		g := mustApply(t, c, "last")
		c.WaitSameCommands(g.Index(), waitLong)
		c.CheckSafety()
	})
}

// A node never acknowledges entries it does not hold. Leader L restores a backup while cut
// off: its snapshot S (never committed) replaces its log. n, elected by the others, has a log
// ending below S. With the third node cut off, n's writes can only commit through L. Before
// the fix L skipped every entry at or below its snapshot and answered Success, so n committed
// (and acknowledged) writes L never stored; they were lost at the next leader change. Now L
// acknowledges nothing until n reset it from a snapshot of n's (which takes an entry of n's
// term committed with the third node's help); every write that commits must survive.
// With restart, L restarts between its failed Restore and meeting n (the mark is durable),
// as a leader that crashed in the middle of its Restore would.
func TestRestore_UncommittedRestoreNeverAcknowledgesEntriesItLacks(t *testing.T) {
	t.Run("running", func(t *testing.T) { testUncommittedRestoreFenced(t, false) })
	t.Run("restart", func(t *testing.T) { testUncommittedRestoreFenced(t, true) })
}

func testUncommittedRestoreFenced(t *testing.T, restart bool) {
	raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 3)
		r := c.Node(leader).Raft()
		last := r.LastIndex()
		c.Isolate(leader)
		// Dispatched, never committed: they put L's log, and so its restored snapshot, past
		// anything the next leader holds.
		for i := 0; i < 5; i++ {
			r.Apply(fmt.Appendf(nil, "lost-%d", i), 0)
		}
		c.WaitFor(waitLong, "the commands to be dispatched", func() bool { return r.LastIndex() >= last+5 })
		if err := r.Restore(meta, bytes.NewReader(data), 50*time.Millisecond); err == nil {
			t.Fatal("a restore committed without a quorum")
		}
		restoredAt := statU(t, c, leader, "last_snapshot_index")
		var next int
		c.WaitFor(waitLong, "a new leader among the others", func() bool {
			next = c.Leader()
			return next >= 0 && next != leader
		})
		if restart {
			c.Restart(leader)
			r = c.Node(leader).Raft()
			if got := statU(t, c, leader, "last_snapshot_index"); got != restoredAt {
				t.Fatalf("restarted with snapshot %d, want the restored %d", got, restoredAt)
			}
		}
		c.Heal() // Partition keeps isolations
		c.Partition([]int{leader, next})
		c.WaitFor(waitLong, "the old leader to follow the new one", func() bool {
			return r.Leader() == c.Node(next).Addr || isStopped(r)
		})
		nr := c.Node(next).Raft()
		var committed []string
		for i := 0; i < 3; i++ {
			name := fmt.Sprintf("write-%d", i)
			if err := nr.Apply([]byte(name), 500*time.Millisecond).Error(); err == nil {
				// Only possible once the old leader was reset from the new leader's
				// snapshot (which needs an entry of the new term committed first): it
				// then holds what it acknowledges.
				committed = append(committed, name)
			}
		}
		c.Heal()
		g := mustApply(t, c, "after")
		got := c.WaitSameCommands(g.Index(), waitLong)
		for _, name := range committed {
			if !slices.Contains(got, name) {
				t.Fatalf("acknowledged %s is lost: the cluster holds %v (the old leader's restored snapshot was at %d)", name, got, restoredAt)
			}
		}
		c.CheckSafety()
	})
}

func isStopped(r *raft.Raft) bool {
	select {
	case <-r.Stopped():
		return true
	default:
		return false
	}
}

// A leader that crashes inside its own Restore before it dropped its log is undone at
// restart: it starts from its previous snapshot and log, as if the Restore never happened
// (no node can have counted on the restored snapshot yet), instead of starting from a snapshot
// the cluster never committed and being stopped once it meets the next leader's log.
func TestRestore_LeaderCrashBeforeDroppingItsLogIsUndone(t *testing.T) {
	for _, p := range []raftest.CrashPoint{raftest.CrashInSnapshotClose, raftest.CrashInFSMRestore} {
		t.Run(p.String(), func(t *testing.T) {
			raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
				leader, meta, data := keptAndBackedUp(t, c, 3)
				last := applyN(t, c, "more", 3)
				c.WaitApplied(last, waitLong)
				c.CrashAt(leader, p, 0)
				err := c.Node(leader).Raft().Restore(meta, bytes.NewReader(data), time.Second)
				if c.Node(leader).Running() {
					t.Fatalf("the leader did not crash inside %v (Restore returned %v)", p, err)
				}
				c.Start(leader)
				r := c.Node(leader).Raft()
				f := mustApply(t, c, "between")
				c.WaitSameCommands(f.Index(), waitLong)
				if isStopped(r) {
					t.Fatalf("the restarted leader stopped: %v", r.ShutdownCause())
				}
				want := []string{"kept-0", "kept-1", "kept-2", "more-0", "more-1", "more-2", "between"}
				expectCommands(t, c, want)
				c.CheckSafety()
			})
		})
	}
}
