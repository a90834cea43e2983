package wal_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
	"github.com/raftkit/raft/wal"
)

// Cluster tests with every node on a wal.Store and a FileSnapshotStore in a temporary
// directory. They run in a synctest bubble: the disk I/O is real, only time is virtual. Crash
// closes the stores and Start reopens them from disk, as a process restart would.

const clusterWait = 10 * time.Second

// walStores returns an Options.OpenStores keeping node id's wal in root/id/wal and its
// snapshots in root/id/snapshots.
func walStores(root string, opts ...wal.Option) func(raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore, error) {
	return func(id raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore, error) {
		dir := filepath.Join(root, string(id))
		store, err := wal.Open(filepath.Join(dir, "wal"), opts...)
		if err != nil {
			return nil, nil, nil, err
		}
		snaps, err := raft.NewFileSnapshotStore(dir, 2, nil)
		if err != nil {
			_ = store.Close()
			return nil, nil, nil, err
		}
		return store, store, snaps, nil
	}
}

// walOptions gives n nodes wal stores under a fresh temporary directory of t, with small
// segments so compaction frees whole files.
func walOptions(t *testing.T, n int, opts ...wal.Option) raftest.Options {
	opts = append([]wal.Option{wal.WithSegmentSize(16 << 10)}, opts...)
	return raftest.Options{Nodes: n, OpenStores: walStores(t.TempDir(), opts...)}
}

// withSnapshots makes nodes snapshot every threshold entries and keep trailing entries.
func withSnapshots(opts raftest.Options, threshold, trailing uint64) raftest.Options {
	opts.Config = func(c *raft.Config) {
		c.SnapshotThreshold = threshold
		c.TrailingLogs = trailing
		c.SnapshotInterval = 20 * time.Millisecond
	}
	return opts
}

// applyN applies n commands "<prefix>-<i>" through the cluster, 16 at a time, paced in
// virtual time, and returns the index of the last one.
func applyN(t *testing.T, c *raftest.Cluster, prefix string, n int) uint64 {
	t.Helper()
	var last uint64
	for i := 0; i < n; i += 16 {
		var futures []raft.ApplyFuture
		leader := c.WaitLeader(clusterWait)
		for j := i; j < min(i+16, n); j++ {
			futures = append(futures, c.Node(leader).Raft().Apply(fmt.Appendf(nil, "%s-%d", prefix, j), clusterWait))
		}
		for _, f := range futures {
			if err := f.Error(); err != nil {
				t.Fatalf("apply %s: %v", prefix, err)
			}
			last = max(last, f.Index())
		}
	}
	return last
}

// requireSameFSMs waits until every running node applied index and checks that they all
// applied the same want commands, in the same order.
func requireSameFSMs(t *testing.T, c *raftest.Cluster, index uint64, want int) {
	t.Helper()
	if cmds := c.WaitSameCommands(index, clusterWait); len(cmds) != want {
		t.Fatalf("nodes applied %d commands, want %d", len(cmds), want)
	}
	c.CheckSafety()
}

// restartAll crashes every node (closing its wal), then starts every node from disk.
func restartAll(c *raftest.Cluster) {
	for i := range c.Nodes() {
		c.Crash(i)
	}
	for i := range c.Nodes() {
		c.Start(i)
	}
}

func TestWALCluster_FullRestartRecoversEveryFSM(t *testing.T) {
	raftest.Run(t, walOptions(t, 3), func(t *testing.T, c *raftest.Cluster) {
		c.WaitLeader(clusterWait)
		applyN(t, c, "before", 200)
		restartAll(c)
		last := applyN(t, c, "after", 50)
		requireSameFSMs(t, c, last, 250)
	})
}

func TestWALCluster_SnapshotsTruncateTheWALHeadAcrossRestarts(t *testing.T) {
	opts := withSnapshots(walOptions(t, 3, wal.WithNoSync()), 64, 32)
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(clusterWait)
		lagging := (leader + 1) % 3
		applyN(t, c, "a", 100)
		laggingLast := lastIndex(t, c, lagging)
		c.Crash(lagging)
		applyN(t, c, "b", 600)
		// The wal head moved past what the crashed follower holds: it can only catch up
		// through InstallSnapshot.
		leader = c.WaitLeader(clusterWait)
		c.WaitFor(clusterWait, "the leader's wal head past the lagging follower", func() bool {
			return firstIndex(t, c, leader) > laggingLast+1
		})
		c.Start(lagging)
		last := applyN(t, c, "c", 100)
		requireSameFSMs(t, c, last, 800)
		restartAll(c)
		last = applyN(t, c, "d", 100)
		requireSameFSMs(t, c, last, 900)
		// Snapshots run on the snapshot goroutine's timer, which the applies above may not
		// have given a tick since the restart; each node compacts once it does.
		c.WaitFor(clusterWait, "every node's wal head truncated by a snapshot", func() bool {
			for i := range c.Nodes() {
				if firstIndex(t, c, i) <= 1 {
					return false
				}
			}
			return true
		})
	})
}

// firstIndex and lastIndex read node i's wal bounds.
func firstIndex(t *testing.T, c *raftest.Cluster, i int) uint64 {
	return walBound(t, c.Node(i).Logs.FirstIndex)
}

func lastIndex(t *testing.T, c *raftest.Cluster, i int) uint64 {
	return walBound(t, c.Node(i).Logs.LastIndex)
}

func walBound(t *testing.T, read func() (uint64, error)) uint64 {
	t.Helper()
	index, err := read()
	if err != nil {
		t.Fatalf("reading wal bounds: %v", err)
	}
	return index
}

// TestWALCluster_LeaderCrashesBeforeFollowersLearnCommit is scenario N1 (docs/design.md,
// section 12) on wal: the acknowledged entry is on the followers' disks but not known
// committed; after every node restarts from disk the next leader's no-op commits it and each
// node applies it once.
func TestWALCluster_LeaderCrashesBeforeFollowersLearnCommit(t *testing.T) {
	var slowCommit atomic.Bool
	slowCommit.Store(true)
	opts := walOptions(t, 3)
	opts.Config = func(conf *raft.Config) {
		if slowCommit.Load() {
			conf.CommitTimeout = time.Hour // followers learn no commit index before the crash
		}
	}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(clusterWait)
		applyN(t, c, "warm-up", 1)
		f := c.Node(leader).Raft().Apply([]byte("acked"), clusterWait)
		if err := f.Error(); err != nil {
			t.Fatalf("apply: %v", err)
		}
		c.Crash(leader)
		slowCommit.Store(false)
		restartAll(c)
		last := applyN(t, c, "next", 1)
		requireSameFSMs(t, c, last, 3)
		if got := c.Commands(leader); got[1] != "acked" {
			t.Fatalf("applied %v, want the acknowledged entry second", got)
		}
	})
}

// TestWALCluster_ConflictingSuffixIsTruncated is scenario T1 (docs/design.md, section 12)
// on wal: a cut-off leader's unreplicated entries are truncated from its wal when it rejoins,
// also across a restart.
func TestWALCluster_ConflictingSuffixIsTruncated(t *testing.T) {
	raftest.Run(t, walOptions(t, 3), func(t *testing.T, c *raftest.Cluster) {
		old := c.WaitLeader(clusterWait)
		applyN(t, c, "base", 1)
		r := c.Node(old).Raft()
		c.Isolate(old)
		for i := 0; i < 5; i++ {
			r.Apply(fmt.Appendf(nil, "stale-%d", i), 0) // only the cut-off leader stores these
		}
		c.WaitFor(clusterWait, "the stale entries in the old leader's wal", func() bool {
			return lastIndex(t, c, old) >= r.CommitIndex()+5
		})
		c.Partition([]int{old}, []int{(old + 1) % 3, (old + 2) % 3})
		c.WaitFor(clusterWait, "a new leader in the majority", func() bool {
			l := c.Leader()
			return l >= 0 && l != old
		})
		applyN(t, c, "fresh", 8)
		c.Restart(old) // the stale suffix comes back from disk
		c.Heal()
		last := applyN(t, c, "converged", 1)
		requireSameFSMs(t, c, last, 10)
		if lastIndex(t, c, old) != lastIndex(t, c, (old+1)%3) {
			t.Fatalf("old leader's wal did not converge")
		}
	})
}
