package raft_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// TestReplication_ReplicatedEntryCommitsAppliesAndAnswers: an entry replicated to all nodes
// commits, is applied everywhere, and the client gets the FSM's response (scenario R1,
// docs/design.md sections 3 and 12).
func TestReplication_ReplicatedEntryCommitsAppliesAndAnswers(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(5 * time.Second)
		r := c.Node(leader).Raft()
		f := r.Apply([]byte("hello"), 2*time.Second)
		if err := f.Error(); err != nil {
			t.Fatalf("apply: %v", err)
		}
		if got := f.Response(); got != f.Index() {
			t.Fatalf("response %v, want the applied index %d", got, f.Index())
		}
		c.WaitApplied(f.Index(), 5*time.Second)
		for _, n := range c.Nodes() {
			entries := n.FSM().(*raftest.RecordingFSM).Entries()
			if len(entries) != 1 || string(entries[0].Data) != "hello" {
				t.Fatalf("%s applied %v, want one entry hello", n.ID, entries)
			}
		}
		c.CheckSafety()
	})
}

func TestRaft_ThousandQueuedAppliesAllCommit(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(5 * time.Second)
		r := c.Node(leader).Raft()
		var futures []raft.ApplyFuture
		for i := 0; i < 1000; i++ {
			futures = append(futures, r.Apply([]byte(fmt.Sprintf("cmd-%d", i)), 5*time.Second))
		}
		for _, f := range futures {
			if err := f.Error(); err != nil {
				t.Fatalf("apply: %v", err)
			}
		}
		c.WaitApplied(futures[len(futures)-1].Index(), 5*time.Second)
		c.CheckSafety()
	})
}
