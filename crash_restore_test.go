package raft_test

import (
	"bytes"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/raftkit/raft/raftest"
)

// The leader crashes inside its own Restore, at a crash point drawn from the seed: while
// writing the restored snapshot, closing it, restoring its FSM, deleting its log or writing
// the no-op after it. The cluster must stay safe through the crash and the restart, and a
// Restore retried until it succeeds (as its documentation asks) must leave every node with
// exactly the backup plus what followed.
func TestRandomized_CrashInsideLeaderRestore(t *testing.T) {
	// A leader that crashed after storing the restored snapshot and before its no-op
	// committed restarts on that snapshot, fenced, and meets a new leader whose log differs
	// there: it is reset from that leader's snapshot (it used to stop with
	// ErrUncommittedRestore at every restart, e.g. -seed=4197998521066907194).
	points := []raftest.CrashPoint{raftest.CrashInSnapshotWrite, raftest.CrashInSnapshotClose,
		raftest.CrashInFSMRestore, raftest.CrashInDeleteRange, raftest.CrashInStoreLogs}
	forEachSeed(t, func(t *testing.T, seed int64) {
		rng := rand.New(rand.NewSource(seed))
		opts := manualSnapshots(snapOpts(3))
		opts.Seed = seed
		raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
			leader, meta, data := keptAndBackedUp(t, c, 5)
			c.WaitApplied(applyN(t, c, "lost", 20), waitLong)
			p := points[rng.Intn(len(points))]
			t.Logf("the leader %d crashes inside %v during its Restore", leader, p)
			c.CrashAt(leader, p, 0)
			err := c.Node(leader).Raft().Restore(meta, bytes.NewReader(data), time.Second)
			t.Logf("the interrupted Restore returned %v", err)
			if c.Node(leader).Running() {
				c.Crash(leader) // the crash point was not reached: crash right after
			}
			c.Start(leader)
			c.WaitLeader(waitLong)
			// Safe and live after the crash, whatever state the restore reached.
			f := mustApply(t, c, "between")
			c.WaitSameCommands(f.Index(), waitLong)
			c.CheckSafety()
			restoreEverywhere(t, c, meta, data)
			g := mustApply(t, c, "after")
			c.WaitApplied(g.Index(), waitLong)
			want := []string{"kept-0", "kept-1", "kept-2", "kept-3", "kept-4", "after"}
			expectCommands(t, c, want)
			for i := range c.Nodes() {
				c.Restart(i)
			}
			c.WaitLeader(waitLong)
			c.WaitApplied(g.Index(), waitLong)
			if got := commands(c, leader); !slices.Equal(got, want) {
				t.Fatalf("after a full restart node %d holds %v, want %v", leader, got, want)
			}
			c.CheckSafety()
		})
	})
}
