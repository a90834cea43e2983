package raft_test

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Leadership transfer and TimeoutNow (docs/design.md, section 6; transfer.go).

func TestLeadershipTransfer_ToChosenNodeUnderLoad(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		acks := &ackLog{acked: make(map[string]bool)}
		stop := make(chan struct{})
		wg := load(c, 8, acks, stop)
		raftest.Eventually(200*time.Millisecond, func() bool { return false })
		target := c.Node(others(c, leader)[1])
		if err := c.Node(leader).Raft().LeadershipTransferToServer(target.ID, target.Addr).Error(); err != nil {
			t.Fatalf("transfer: %v", err)
		}
		if l := c.WaitLeader(waitLong); c.Node(l).ID != target.ID {
			t.Fatalf("leader is %s, want %s", c.Node(l).ID, target.ID)
		}
		raftest.Eventually(200*time.Millisecond, func() bool { return false })
		close(stop)
		wg.Wait()
		f := mustApply(t, c, "final")
		c.WaitApplied(f.Index(), waitLong)
		checkAcked(t, c, acks)
		c.CheckSafety()
	})
}

func TestLeadershipTransfer_ToMostUpToDate(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		mustApply(t, c, "x")
		if err := c.Node(leader).Raft().LeadershipTransfer().Error(); err != nil {
			t.Fatalf("transfer: %v", err)
		}
		if l := c.WaitLeader(waitLong); l == leader {
			t.Fatal("leadership did not move")
		}
	})
}

func TestLeadershipTransfer_ToDownNodeFailsAndLeaderKeepsServing(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		down := others(c, leader)[0]
		c.Crash(down)
		r := c.Node(leader).Raft()
		err := r.LeadershipTransferToServer(c.Node(down).ID, c.Node(down).Addr).Error()
		if !errors.Is(err, raft.ErrLeadershipTransferFailed) {
			t.Fatalf("transfer to a down node: %v, want ErrLeadershipTransferFailed", err)
		}
		if r.State() != raft.Leader {
			t.Fatal("the old leader stopped leading after a failed transfer")
		}
		if err := r.Apply([]byte("still-serving"), waitLong).Error(); err != nil {
			t.Fatalf("write after the failed transfer: %v", err)
		}
	})
}

// Decision (issue 10, bug 6): a TimeoutNow starts a transfer election (no pre-vote, voters
// ignore their leader stickiness) only when it certainly belongs to a live transfer: it comes
// from the leader n1 follows, in n1's term, and n1's log still ends where the leader saw it
// end. Before, any TimeoutNow of the current or a newer term did, including one that arrived
// after its leader gave the transfer up and appended again.
func TestTimeoutNow_StaleOrForeignRequestStartsNoElection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := raft.NewInmemStore()
		quiet := func(p *scriptedPeer, rpc raft.RPC) {
			if !p.ackHeartbeat(rpc) {
				rpc.Respond(nil, errors.New("scripted peer is quiet"))
			}
		}
		c := newScriptedCluster(t, store, store, quiet, quiet, func(conf *raft.Config) {
			conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Minute, time.Minute, time.Minute
		})
		// f leads term 2; n1 holds its entries up to 3.
		entries := []*raft.Log{
			{Index: 2, Term: 2, Type: raft.LogNoop},
			{Index: 3, Term: 2, Type: raft.LogCommand, Data: []byte("x")},
		}
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 1, PrevLogTerm: 1, LeaderCommitIndex: 3, Entries: entries}); err != nil || !resp.Success {
			t.Fatalf("append: %+v, %v", resp, err)
		}
		refused := []struct {
			what string
			send func() error
		}{
			{"from a node that is not the leader", func() error { return c.g.sendTimeoutNow(2, 3) }},
			{"of an older term", func() error { return c.f.sendTimeoutNow(1, 3) }},
			{"of a newer term", func() error { return c.f.sendTimeoutNow(3, 3) }},
			{"sent for a log that has moved on since (the leader gave up)", func() error { return c.f.sendTimeoutNow(2, 2) }},
		}
		for _, tc := range refused {
			if err := tc.send(); !errors.Is(err, raft.ErrLeadershipTransferFailed) {
				t.Fatalf("TimeoutNow %s: %v, want ErrLeadershipTransferFailed", tc.what, err)
			}
			if st, term := c.r.State(), c.r.CurrentTerm(); st != raft.Follower || term != 2 {
				t.Fatalf("TimeoutNow %s: n1 is %v in term %d, want a follower in term 2", tc.what, st, term)
			}
		}
		// The live transfer goes through.
		if err := c.f.sendTimeoutNow(2, 3); err != nil {
			t.Fatalf("TimeoutNow of the live transfer: %v", err)
		}
		if !raftest.Eventually(time.Second, func() bool { return c.r.CurrentTerm() == 3 }) {
			t.Fatalf("n1 is %v in term %d after a valid TimeoutNow, want an election in term 3", c.r.State(), c.r.CurrentTerm())
		}
	})
}
