package raft_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// load runs clients applying unique commands until stop closes; acks records the outcome.
func load(c *raftest.Cluster, clients int, acks *ackLog, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chaosClient(c, i, int64(i), false, acks, stop)
		}()
	}
	return &wg
}

// acked counts the acknowledged commands.
func (a *ackLog) ackedCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, ok := range a.acked {
		if ok {
			n++
		}
	}
	return n
}

// waitProgress waits until n more writes were acknowledged.
func waitProgress(t *testing.T, c *raftest.Cluster, acks *ackLog, n int) {
	t.Helper()
	base := acks.ackedCount()
	c.WaitFor(waitLong, fmt.Sprintf("%d more acknowledged writes", n), func() bool { return acks.ackedCount() >= base+n })
}

// leaderRaft returns the current leader's Raft, waiting for one.
func leaderRaft(t *testing.T, c *raftest.Cluster) *raft.Raft {
	t.Helper()
	return c.Node(c.WaitLeader(waitLong)).Raft()
}

// changeMembership runs op against the current leader, retrying when leadership moved.
func changeMembership(t *testing.T, c *raftest.Cluster, what string, op func(r *raft.Raft) raft.IndexFuture) uint64 {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		f := op(leaderRaft(t, c))
		err := f.Error()
		if err == nil {
			return f.Index()
		}
		if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// voters returns the IDs of the voters in the leader's latest configuration.
func voters(t *testing.T, c *raftest.Cluster) []raft.ServerID {
	t.Helper()
	var ids []raft.ServerID
	for _, s := range leaderRaft(t, c).GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

func TestMembership_GrowAndShrinkUnderLoad(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 5, InitialVoters: 1}, func(t *testing.T, c *raftest.Cluster) {
		c.WaitLeader(waitLong)
		acks := &ackLog{acked: make(map[string]bool)}
		stop := make(chan struct{})
		wg := load(c, 32, acks, stop)
		for i := 1; i < 5; i++ {
			n := c.Node(i)
			changeMembership(t, c, fmt.Sprintf("add %s", n.ID), func(r *raft.Raft) raft.IndexFuture {
				return r.AddVoter(n.ID, n.Addr, 0, waitLong)
			})
			if got := len(voters(t, c)); got != i+1 {
				t.Fatalf("after adding %s: %d voters, want %d", n.ID, got, i+1)
			}
			waitProgress(t, c, acks, 20)
		}
		// Shrink back to one, removing the leader itself along the way.
		for len(voters(t, c)) > 1 {
			leader := c.WaitLeader(waitLong)
			victim := c.Node(leader).ID
			changeMembership(t, c, fmt.Sprintf("remove %s", victim), func(r *raft.Raft) raft.IndexFuture {
				return r.RemoveServer(victim, 0, waitLong)
			})
			c.WaitFor(waitLong, "a leader in the new configuration", func() bool {
				l := c.Leader()
				return l >= 0 && c.Node(l).ID != victim
			})
			waitProgress(t, c, acks, 20)
		}
		close(stop)
		wg.Wait()
		f := mustApply(t, c, "final")
		last := c.Leader()
		c.WaitFor(waitLong, "final applied on the last voter", func() bool {
			return c.Node(last).Raft().AppliedIndex() >= f.Index()
		})
		// Every acknowledged write survived all the changes, on the remaining voter.
		got := make(map[string]int)
		for _, cmd := range recorded(c, last) {
			got[cmd]++
		}
		acked := 0
		for cmd, ok := range acks.acked {
			if ok {
				acked++
				if got[cmd] != 1 {
					t.Fatalf("acknowledged %q applied %d times on the last voter", cmd, got[cmd])
				}
			}
		}
		if acked < 8*20 {
			t.Fatalf("only %d writes acknowledged during the changes", acked)
		}
		t.Logf("%d writes acknowledged during grow and shrink", acked)
	})
}

func TestMembership_StalePrevIndexFails(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 4, InitialVoters: 3}, func(t *testing.T, c *raftest.Cluster) {
		r := leaderRaft(t, c)
		before := r.GetConfiguration().Index()
		n := c.Node(3)
		if err := r.AddNonvoter(n.ID, n.Addr, before, waitLong).Error(); err != nil {
			t.Fatalf("add nonvoter with the current index: %v", err)
		}
		err := r.RemoveServer(n.ID, before, waitLong).Error()
		if !errors.Is(err, raft.ErrConfigurationChanged) {
			t.Fatalf("change with a stale prevIndex: %v, want ErrConfigurationChanged", err)
		}
	})
}

func TestMembership_ConcurrentChangesSerialize(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 5, InitialVoters: 3}, func(t *testing.T, c *raftest.Cluster) {
		r := leaderRaft(t, c)
		f1 := r.AddVoter(c.Node(3).ID, c.Node(3).Addr, 0, waitLong)
		f2 := r.AddVoter(c.Node(4).ID, c.Node(4).Addr, 0, waitLong)
		if err := f1.Error(); err != nil {
			t.Fatal(err)
		}
		if err := f2.Error(); err != nil {
			t.Fatal(err)
		}
		if f2.Index() <= f1.Index() {
			t.Fatalf("second change at %d is not after the first at %d", f2.Index(), f1.Index())
		}
		if got := len(voters(t, c)); got != 5 {
			t.Fatalf("%d voters, want 5", got)
		}
		mustApply(t, c, "after")
	})
}

func TestMembership_NewNodeCatchesUpBySnapshot(t *testing.T) {
	opts := raftest.Options{Nodes: 4, InitialVoters: 3, Config: func(conf *raft.Config) {
		conf.TrailingLogs = 10
		conf.SnapshotThreshold = 50
		conf.SnapshotInterval = 20 * time.Millisecond
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		r := leaderRaft(t, c)
		for i := 0; i < 300; i++ {
			mustApply(t, c, fmt.Sprintf("pre-%d", i))
		}
		c.WaitFor(waitLong, "the leader to compact its log", func() bool {
			return r.Stats()["last_snapshot_index"] != "0"
		})
		n := c.Node(3)
		changeMembership(t, c, "add n4", func(r *raft.Raft) raft.IndexFuture { return r.AddVoter(n.ID, n.Addr, 0, waitLong) })
		f := mustApply(t, c, "post")
		c.WaitApplied(f.Index(), waitLong)
		if n.Raft().Stats()["last_snapshot_index"] == "0" {
			t.Fatal("the new node caught up without a snapshot")
		}
		if got := recorded(c, 3); len(got) != 301 || got[300] != "post" {
			t.Fatalf("new node's FSM holds %d entries, want 301", len(got))
		}
		c.CheckSafety()
	})
}

func TestMembership_RemovedNodeDoesNotDisrupt(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		victim := others(c, leader)[0]
		id := c.Node(victim).ID
		// The victim is cut off before its removal, so it never learns of it: it restarts
		// with the old configuration, in which it is still a voter.
		c.Isolate(victim)
		changeMembership(t, c, "remove", func(r *raft.Raft) raft.IndexFuture { return r.RemoveServer(id, 0, waitLong) })
		c.Restart(victim)
		term := c.Node(leader).Raft().CurrentTerm()
		base := electionRounds(c, victim)
		waitCandidateRounds(t, c, victim, 3)
		c.Heal()
		waitCandidateRounds(t, c, victim, 3)
		for i := 0; i < 20; i++ {
			mustApply(t, c, fmt.Sprintf("after-%d", i))
		}
		if c.Leader() != leader || c.Node(leader).Raft().CurrentTerm() != term {
			t.Fatalf("the removed node disrupted the cluster: leader %d term %d, was %d term %d",
				c.Leader(), c.Node(max(c.Leader(), 0)).Raft().CurrentTerm(), leader, term)
		}
		if vt := c.Node(victim).Raft().CurrentTerm(); vt > term {
			t.Fatalf("removed node's term rose to %d (cluster term %d)", vt, term)
		}
		t.Logf("removed node ran %d election rounds without effect", electionRounds(c, victim)-base)
	})
}

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

func TestRecoverCluster_OneSurvivorOfThree(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		c.WaitLeader(waitLong)
		for i := 0; i < 10; i++ {
			mustApply(t, c, fmt.Sprintf("v%d", i))
		}
		f := mustApply(t, c, "last")
		c.WaitApplied(f.Index(), waitLong)
		// Two nodes are destroyed for good; the survivor is stopped and recovered.
		c.Crash(1)
		c.Crash(2)
		c.Crash(0)
		survivor := c.Node(0)
		conf := raft.DefaultConfig()
		conf.LocalID = survivor.ID
		only := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: survivor.ID, Address: survivor.Addr}}}
		if err := raft.RecoverCluster(conf, raftest.NewRecordingFSM(), survivor.Logs, survivor.Stable, survivor.Snaps, nil, only); err != nil {
			t.Fatalf("recover: %v", err)
		}
		c.Start(0)
		c.WaitFor(waitLong, "the survivor to lead alone", func() bool { return c.Leader() == 0 })
		g, err := c.Apply([]byte("after-recovery"), waitLong)
		if err != nil {
			t.Fatalf("write after recovery: %v", err)
		}
		c.WaitFor(waitLong, "the write applied", func() bool { return survivor.Raft().AppliedIndex() >= g.Index() })
		got := recorded(c, 0)
		if len(got) != 12 || got[10] != "last" || got[11] != "after-recovery" {
			t.Fatalf("survivor applied %v", got)
		}
	})
}

func TestObserver_SeesLeaderAndStateChanges(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		follower := c.Node(others(c, leader)[0]).Raft()
		ch := make(chan raft.Observation, 64)
		obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
			_, ok := o.Data.(raft.LeaderObservation)
			return ok
		})
		follower.RegisterObserver(obs)
		defer follower.DeregisterObserver(obs)
		c.Crash(leader)
		c.WaitLeader(waitLong)
		c.WaitFor(waitLong, "a leader observation naming a new leader", func() bool {
			for {
				select {
				case o := <-ch:
					if lo := o.Data.(raft.LeaderObservation); lo.LeaderID != "" && lo.LeaderID != c.Node(leader).ID {
						return true
					}
				default:
					return false
				}
			}
		})
		if obs.GetNumObserved() == 0 {
			t.Fatal("observer counted nothing")
		}
	})
}
