package raft_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
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

// soloBaseConfiguration is the configuration newSoloNode bootstraps at index 1.
func soloBaseConfiguration() raft.Configuration {
	return raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "n1", Address: "addr-n1"},
		{Suffrage: raft.Voter, ID: "fake", Address: fakeAddr},
		{Suffrage: raft.Voter, ID: "n3", Address: "addr-n3"},
	}}
}

// withNonvoter returns c plus a nonvoter.
func withNonvoter(c raft.Configuration, id raft.ServerID) raft.Configuration {
	c = c.Clone()
	c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Nonvoter, ID: id, Address: raft.ServerAddress("addr-" + id)})
	return c
}

func configEntry(index, term uint64, c raft.Configuration) *raft.Log {
	return &raft.Log{Index: index, Term: term, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(c)}
}

// TestConfiguration_TruncationRevertsToNewestRemainingConfiguration (docs/design.md, section
// 7): a follower holds two configuration entries past its committed configuration: C1 (index
// 2, committed by the leader) and C2 (index 3, uncommitted). A new leader cuts C2 away. The
// follower's latest configuration must become C1, the newest entry left in its log, not the
// older configuration it last saw committed.
func TestConfiguration_TruncationRevertsToNewestRemainingConfiguration(t *testing.T) {
	testTruncationRevert(t, false)
}

// TestConfiguration_TruncationRevertsToCompactedCommittedConfiguration: as above, with C1
// compacted into a snapshot before the truncation: the node must know C1 is committed, since
// the log no longer holds it.
func TestConfiguration_TruncationRevertsToCompactedCommittedConfiguration(t *testing.T) {
	testTruncationRevert(t, true)
}

func testTruncationRevert(t *testing.T, compact bool) {
	synctest.Test(t, func(t *testing.T) {
		n := newSoloNode(t, func(c *raft.Config) { c.TrailingLogs = 0 })
		c1 := withNonvoter(soloBaseConfiguration(), "x")
		c2 := withNonvoter(c1, "y")
		steps := []*raft.AppendEntriesRequest{
			{Term: 2, PrevLogIndex: 1, PrevLogTerm: 1, LeaderCommitIndex: 1, Entries: []*raft.Log{configEntry(2, 2, c1)}},
			// C1 committed (leader commit 2) but C2 not: the commit index passes C1 in the
			// same request that appends C2.
			{Term: 2, PrevLogIndex: 2, PrevLogTerm: 2, LeaderCommitIndex: 2, Entries: []*raft.Log{configEntry(3, 2, c2)}},
			// A leader of term 3 that never had C2 replaces entry 3.
			{Term: 3, PrevLogIndex: 2, PrevLogTerm: 2, LeaderCommitIndex: 2, Entries: []*raft.Log{{Index: 3, Term: 3, Type: raft.LogNoop}}},
		}
		for i, req := range steps {
			if i == 2 && compact {
				if !raftest.Eventually(time.Second, func() bool { return n.r.AppliedIndex() == 2 }) {
					t.Fatalf("applied %d, want 2", n.r.AppliedIndex())
				}
				if err := n.r.Snapshot().Error(); err != nil {
					t.Fatal(err)
				}
				if first, _ := n.logs.FirstIndex(); first != 3 {
					t.Fatalf("first index %d after compaction, want 3", first)
				}
			}
			resp, err := n.send(req)
			if err != nil || !resp.Success {
				t.Fatalf("step %d: %+v, %v", i, resp, err)
			}
		}
		got := n.r.GetConfiguration()
		if got.Index() != 2 || len(got.Configuration().Servers) != 4 {
			t.Fatalf("latest configuration at index %d with %+v, want C1 at index 2", got.Index(), got.Configuration().Servers)
		}
		// Once everything commits, the configuration stays C1.
		resp, err := n.send(&raft.AppendEntriesRequest{Term: 3, PrevLogIndex: 3, PrevLogTerm: 3, LeaderCommitIndex: 3})
		if err != nil || !resp.Success {
			t.Fatalf("commit: %+v, %v", resp, err)
		}
		if !raftest.Eventually(time.Second, func() bool { return n.r.AppliedIndex() == 3 }) {
			t.Fatalf("applied %d, want 3", n.r.AppliedIndex())
		}
		if got := n.r.GetConfiguration(); got.Index() != 2 {
			t.Fatalf("after commit: configuration at index %d, want 2", got.Index())
		}
	})
}

// serveFakeVoter answers the soloNode's requests to the fake peer until stop closes: it
// grants every (pre-)vote, acknowledges every request without entries, and refuses requests
// with entries unless accept is set.
func serveFakeVoter(fake *raft.InmemTransport, accept *atomic.Bool, stop <-chan struct{}) {
	for {
		select {
		case rpc := <-fake.Consumer():
			switch req := rpc.Command.(type) {
			case *raft.RequestPreVoteRequest:
				rpc.Respond(&raft.RequestPreVoteResponse{RPCHeader: fakeHeader(), Term: req.Term - 1, Granted: true}, nil)
			case *raft.RequestVoteRequest:
				rpc.Respond(&raft.RequestVoteResponse{RPCHeader: fakeHeader(), Term: req.Term, Granted: true}, nil)
			case *raft.AppendEntriesRequest:
				if len(req.Entries) > 0 && !accept.Load() {
					rpc.Respond(nil, errors.New("fake voter refuses entries"))
					continue
				}
				last := req.PrevLogIndex + uint64(len(req.Entries))
				rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: fakeHeader(), Term: req.Term, Success: true, LastLogIndex: last}, nil)
			default:
				rpc.Respond(nil, fmt.Errorf("fake voter does not serve %T", req))
			}
		case <-stop:
			return
		}
	}
}

// TestMembership_ConfigChangeWaitsForCommitInLeaderTerm (docs/design.md, section 7): a new
// leader must not append a configuration entry before an entry of its own term
// committed (the single-server membership change bug, Ongaro, raft-dev 2015): until then its
// idea of the committed configuration may be stale, and two configurations that each differ
// by one server from different bases can have disjoint majorities.
func TestMembership_ConfigChangeWaitsForCommitInLeaderTerm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSoloNode(t)
		// A leader of term 2 tells n1 that the bootstrap configuration is committed, so n1's
		// latest configuration is its committed one when it leads.
		if resp, err := n.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 1, PrevLogTerm: 1, LeaderCommitIndex: 1}); err != nil || !resp.Success {
			t.Fatalf("commit of the bootstrap entry: %+v, %v", resp, err)
		}
		var accept atomic.Bool
		stop := make(chan struct{})
		served := make(chan struct{})
		go func() {
			defer close(served)
			serveFakeVoter(n.fake, &accept, stop)
		}()
		defer func() {
			close(stop)
			<-served
		}()
		if !raftest.Eventually(5*time.Second, func() bool { return n.r.State() == raft.Leader }) {
			t.Fatalf("n1 did not become leader (state %s)", n.r.State())
		}
		f := n.r.AddNonvoter("x", "addr-x", 0, 0)
		pause := time.NewTimer(200 * time.Millisecond)
		<-pause.C
		if n.r.State() != raft.Leader {
			t.Fatalf("n1 lost leadership while the fake voter acknowledged heartbeats")
		}
		if got := n.r.GetConfiguration().Index(); got != 1 {
			t.Fatalf("configuration entry appended at %d before the leader's no-op committed (commit index %d)", got, n.r.CommitIndex())
		}
		accept.Store(true)
		if err := f.Error(); err != nil {
			t.Fatalf("AddNonvoter after the no-op committed: %v", err)
		}
		if got := n.r.GetConfiguration(); got.Index() <= 2 || len(got.Configuration().Servers) != 4 {
			t.Fatalf("configuration at %d with %+v, want x added after the no-op", got.Index(), got.Configuration().Servers)
		}
	})
}

// serverSuffrage returns id's suffrage in c, and whether it is there.
func serverSuffrage(c raft.Configuration, id raft.ServerID) (raft.ServerSuffrage, bool) {
	for _, s := range c.Servers {
		if s.ID == id {
			return s.Suffrage, true
		}
	}
	return 0, false
}

// A leader transferring leadership promises to append nothing new, membership changes
// included. Before the fix the promotion of a caught-up nonvoter (and any queued change) ran
// from the leader's tick without looking at the transfer. Here n4's AddVoter waits for n4 to
// catch up while a transfer to a lagging voter is in progress; n4 catches up: the promotion
// must wait for the transfer to end, and go through once it failed.
func TestMembership_NoConfigChangeDuringLeadershipTransfer(t *testing.T) {
	opts := raftest.Options{Nodes: 4, InitialVoters: 3, Config: func(c *raft.Config) {
		c.ElectionTimeout = time.Second // the transfer gives up after two of them
		c.MaxAppendEntries = 1          // "caught up" means within one entry of the leader
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		var voters []int
		for _, i := range others(c, leader) {
			if i != 3 {
				voters = append(voters, i)
			}
		}
		target, other := voters[0], voters[1]
		n4 := c.Node(3)
		// n4 cannot catch up yet: its AddVoter stops at the nonvoter step.
		c.Partition([]int{leader, target, other})
		applyN(t, c, "history", 5)
		added := r.AddVoter(n4.ID, n4.Addr, 0, 0)
		c.WaitFor(waitLong, "n4 to join as a nonvoter", func() bool {
			s, ok := serverSuffrage(r.GetConfiguration().Configuration(), n4.ID)
			return ok && s == raft.Nonvoter && r.CommitIndex() >= r.GetConfiguration().Index()
		})
		// The target lags behind an entry the others commit, so the transfer waits for it.
		c.Partition([]int{leader, other})
		mustApply(t, c, "target-misses-this")
		configIndex := r.GetConfiguration().Index()
		transfer := r.LeadershipTransferToServer(c.Node(target).ID, c.Node(target).Addr)
		// n4 catches up during the transfer.
		c.Partition([]int{leader, other, 3})
		c.WaitFor(waitLong, "n4 to catch up", func() bool { return n4.Raft().LastIndex() >= r.LastIndex() })
		if raftest.Eventually(500*time.Millisecond, func() bool { return r.GetConfiguration().Index() != configIndex }) {
			t.Fatalf("configuration entry appended at %d during the leadership transfer (was %d)", r.GetConfiguration().Index(), configIndex)
		}
		if err := transfer.Error(); !errors.Is(err, raft.ErrLeadershipTransferFailed) {
			t.Fatalf("transfer to a cut-off voter: %v, want ErrLeadershipTransferFailed", err)
		}
		c.Heal()
		if err := added.Error(); err != nil {
			t.Fatalf("AddVoter after the transfer failed: %v", err)
		}
		if s, _ := serverSuffrage(c.Node(c.WaitLeader(waitLong)).Raft().GetConfiguration().Configuration(), n4.ID); s != raft.Voter {
			t.Fatalf("n4 is %v after the promotion", s)
		}
	})
}
