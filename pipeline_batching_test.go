package raft_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// slowDiskStore is an InmemStore whose StoreLogs takes diskLatency (of virtual time inside a
// synctest bubble), like a write plus fsync, and counts writes and entries.
type slowDiskStore struct {
	*raft.InmemStore
	writes  atomic.Int64
	entries atomic.Int64
}

const diskLatency = 500 * time.Microsecond

func (s *slowDiskStore) StoreLogs(logs []*raft.Log) error {
	<-time.After(diskLatency) // models the disk, it synchronizes nothing
	s.writes.Add(1)
	s.entries.Add(int64(len(logs)))
	return s.InmemStore.StoreLogs(logs)
}

func (s *slowDiskStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// TestReplication_PipelineBatchesEntriesOnSlowFollowerDisks checks group commit on the
// followers: with many clients and a disk that takes time per write, followers store many
// entries per write. An unbounded pipeline sends each newly dispatched entry in a request
// of its own, and each costs the follower a write: one fsync per entry.
func TestReplication_PipelineBatchesEntriesOnSlowFollowerDisks(t *testing.T) {
	const clients, perClient = 64, 40
	opts := raftest.Options{Nodes: 3, NewStores: func(raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore) {
		s := &slowDiskStore{InmemStore: raft.NewInmemStore()}
		return s, s.InmemStore, raft.NewInmemSnapshotStore()
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		var wg sync.WaitGroup
		var failed atomic.Int64
		for w := 0; w < clients; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perClient; i++ {
					if r.Apply(fmt.Appendf(nil, "c%d-%d", w, i), waitLong).Error() != nil {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if n := failed.Load(); n != 0 {
			t.Fatalf("%d applies failed", n)
		}
		c.WaitApplied(r.LastIndex(), waitLong) // commits need only one follower: wait for both
		for _, i := range others(c, leader) {
			s := c.Node(i).Logs.(*slowDiskStore)
			writes, entries := s.writes.Load(), s.entries.Load()
			t.Logf("follower %d: %d entries in %d writes", i, entries, writes)
			if entries < clients*perClient || writes*4 > entries {
				t.Fatalf("follower %d stored %d entries in %d writes: want at least 4 entries per write", i, entries, writes)
			}
		}
		c.CheckSafety()
	})
}
