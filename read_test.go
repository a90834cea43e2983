package raft_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

func TestReadIndex_SeesEveryCompletedWrite(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		for round := 0; round < 3; round++ {
			w := mustApply(t, c, fmt.Sprintf("w%d", round))
			// A new leader right after the write: its commit index may lag until its no-op
			// commits, and ReadIndex must wait for that.
			leader := c.WaitLeader(waitLong)
			c.Crash(leader)
			next := c.WaitLeader(waitLong)
			r := c.Node(next).Raft()
			f := r.ReadIndex(waitLong)
			if err := f.Error(); err != nil {
				t.Fatalf("read index: %v", err)
			}
			if f.Index() < w.Index() {
				t.Fatalf("read index %d is behind the completed write at %d", f.Index(), w.Index())
			}
			if got := recorded(c, next); len(got) == 0 || got[len(got)-1] != fmt.Sprintf("w%d", round) {
				t.Fatalf("after ReadIndex the leader's FSM ends with %v, want w%d", got, round)
			}
			c.Start(leader)
		}
	})
}

func TestReadIndex_FollowerRefuses(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		err := c.Node(others(c, leader)[0]).Raft().ReadIndex(time.Second).Error()
		if !errors.Is(err, raft.ErrNotLeader) {
			t.Fatalf("ReadIndex on a follower: %v, want ErrNotLeader", err)
		}
	})
}
