package raft_test

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Elections: timers, pre-vote, voting, stickiness and check-quorum (docs/design.md,
// section 6; scenarios E1-E4 of section 12).

// electionRounds reads node i's election round counter from Stats.
func electionRounds(c *raftest.Cluster, i int) int {
	n, _ := strconv.Atoi(c.Node(i).Raft().Stats()["election_rounds"])
	return n
}

// waitCandidateRounds waits until node i ran rounds more election rounds.
func waitCandidateRounds(t *testing.T, c *raftest.Cluster, i, rounds int) {
	t.Helper()
	start := electionRounds(c, i)
	c.WaitFor(waitLong, fmt.Sprintf("%d election rounds on node %d", rounds, i), func() bool {
		return electionRounds(c, i) >= start+rounds
	})
}

// TestElection_WithoutPreVoteIsolatedTermRises: without pre-vote, an isolated node's term
// keeps rising with every election round it runs alone (scenario E1 of docs/design.md,
// section 12; pre-vote is in section 6).
func TestElection_WithoutPreVoteIsolatedTermRises(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3, Config: func(conf *raft.Config) { conf.PreVoteDisabled = true }}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		victim := others(c, leader)[0]
		start := c.Node(victim).Raft().CurrentTerm()
		c.Isolate(victim)
		c.WaitFor(waitLong, "the isolated node's term to rise by 3", func() bool {
			return c.Node(victim).Raft().CurrentTerm() >= start+3
		})
		c.Heal()
		c.WaitLeader(waitLong)
		mustApply(t, c, "after-heal")
		c.CheckSafety()
	})
}

// TestElection_WithPreVoteIsolatedNodeRejoinsWithoutDeposingLeader: with pre-vote, an
// isolated node's term stays put, and when it rejoins it catches up without deposing the
// leader (scenario E1, docs/design.md sections 6 and 12).
func TestElection_WithPreVoteIsolatedNodeRejoinsWithoutDeposingLeader(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		f := mustApply(t, c, "before")
		c.WaitApplied(f.Index(), waitLong)
		leaderTerm := c.Node(leader).Raft().CurrentTerm()
		victim := others(c, leader)[0]
		start := c.Node(victim).Raft().CurrentTerm()
		c.Isolate(victim)
		waitCandidateRounds(t, c, victim, 3)
		if got := c.Node(victim).Raft().CurrentTerm(); got != start {
			t.Fatalf("isolated node's term moved from %d to %d despite pre-vote", start, got)
		}
		c.Heal()
		f = mustApply(t, c, "after")
		c.WaitApplied(f.Index(), waitLong)
		if got := c.Leader(); got != leader || c.Node(leader).Raft().CurrentTerm() != leaderTerm {
			t.Fatalf("the rejoining node deposed the leader: leader %d term %d, was %d term %d",
				got, c.Node(max(got, 0)).Raft().CurrentTerm(), leader, leaderTerm)
		}
		if got := recorded(c, victim); len(got) != 2 || got[1] != "after" {
			t.Fatalf("rejoined node applied %v, want [before after]", got)
		}
		c.CheckSafety()
	})
}

// TestElection_MajorityElectsOneLeaderAndSplitVotesResolve: a majority elects exactly one
// leader, again after each leader crash, with 3 and 5 nodes; simultaneous timeouts invite
// split votes, which must resolve (scenario E2, docs/design.md sections 6 and 12).
func TestElection_MajorityElectsOneLeaderAndSplitVotesResolve(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d_nodes", n), func(t *testing.T) {
			raftest.Run(t, raftest.Options{Nodes: n}, func(t *testing.T, c *raftest.Cluster) {
				for round := 0; round < 3; round++ {
					leader := c.WaitLeader(waitLong)
					mustApply(t, c, fmt.Sprintf("round-%d", round))
					// Crash the leader: the rest (still a majority) must elect a new one, with
					// every node starting its election timer at once, which invites split votes.
					c.Crash(leader)
					next := c.WaitLeader(waitLong)
					if next == leader {
						t.Fatalf("crashed node %d is still leader", leader)
					}
					c.Start(leader)
				}
				c.WaitLeader(waitLong)
				f := mustApply(t, c, "final")
				c.WaitApplied(f.Index(), waitLong)
				c.CheckSafety()
			})
		})
	}
}

// TestElection_HeartbeatsKeepTheLeader: without faults, heartbeats alone keep the leader for
// many election timeouts (scenario E3, docs/design.md sections 6 and 12).
func TestElection_HeartbeatsKeepTheLeader(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		term := c.Node(leader).Raft().CurrentTerm()
		// No writes: only heartbeats flow. Wait for enough of them to cover many election
		// timeouts (one heartbeat per peer every HeartbeatTimeout/10).
		base := c.Net.Stats().Delivered
		c.WaitFor(waitLong, "400 delivered messages", func() bool { return c.Net.Stats().Delivered >= base+400 })
		if got := c.Leader(); got != leader {
			t.Fatalf("leader changed from %d to %d without faults", leader, got)
		}
		for i, n := range c.Nodes() {
			if got := n.Raft().CurrentTerm(); got != term {
				t.Fatalf("node %d moved to term %d (leader's term %d): an election ran", i, got, term)
			}
		}
	})
}

// TestElection_LeaderWithoutMajorityStepsDown: a leader cut off from the majority steps down
// (check-quorum), its waiting write fails with ErrLeadershipLost and is never applied, and
// the majority elects another leader (scenario E4, docs/design.md sections 6 and 12).
func TestElection_LeaderWithoutMajorityStepsDown(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 5}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		c.Isolate(leader)
		f := r.Apply([]byte("lost"), 0) // no timeout: only the step-down can end the wait
		err := f.Error()
		if !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrNotLeader) {
			t.Fatalf("apply on a leader cut off from the majority: %v, want ErrLeadershipLost", err)
		}
		c.WaitFor(waitLong, "the isolated leader to step down", func() bool { return r.State() != raft.Leader })
		next := c.WaitLeader(waitLong)
		if next == leader {
			t.Fatal("the isolated node is leader of the majority")
		}
		c.Heal()
		g := mustApply(t, c, "after")
		c.WaitApplied(g.Index(), waitLong)
		if countOf(c, leader, "lost") != 0 {
			t.Fatal("an entry that was never committed was applied")
		}
		c.CheckSafety()
	})
}

// Decision (issue 10, bug 6): pre-vote is granted only for a term strictly above the voter's,
// as etcd does. A candidate asks for the term it would campaign in; in the voter's own term a
// real vote may already be cast, so granting there promised an election the candidate could
// not win. Before, an equal term was granted.
func TestPreVote_GrantedOnlyForAHigherTerm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := raft.NewInmemStore()
		quiet := func(p *scriptedPeer, rpc raft.RPC) { rpc.Respond(nil, errors.New("scripted peer is quiet")) }
		c := newScriptedCluster(t, store, store, quiet, quiet, func(conf *raft.Config) {
			conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Minute, time.Minute, time.Minute
		})
		// A node that just started counts as having heard from a leader for HeartbeatTimeout
		// (its previous incarnation may have acknowledged one): let that window pass, in the
		// bubble's virtual time.
		time.Sleep(time.Minute)
		// A vote request of term 3 that n1 refuses (g's log is behind) moves n1 to term 3
		// without a leader.
		var resp raft.RequestVoteResponse
		if err := c.g.trans.RequestVote("n1", "addr-n1", &raft.RequestVoteRequest{RPCHeader: c.g.header(), Term: 3}, &resp); err != nil || resp.Granted {
			t.Fatalf("vote request: %+v, %v", resp, err)
		}
		if term := c.r.CurrentTerm(); term != 3 {
			t.Fatalf("n1 in term %d, want 3", term)
		}
		if granted, err := c.f.sendPreVote(3, 1, 1); err != nil || granted {
			t.Fatalf("pre-vote for n1's own term: granted %v, %v; want refused", granted, err)
		}
		if granted, err := c.f.sendPreVote(4, 1, 1); err != nil || !granted {
			t.Fatalf("pre-vote for the next term: granted %v, %v; want granted", granted, err)
		}
	})
}

// Decision (issue 15, item 2): vote and pre-vote apply one set of rules (decideVote). Leader
// stickiness exempts the leader the node follows for both: that leader stepped down to
// campaign, and its lease ended with its leadership. Before, the vote handler exempted it and
// the pre-vote handler did not, so a leader that stepped down could not win a pre-vote among
// followers that had just heard from it.
func TestPreVote_StickinessExemptsTheLeaderFollowed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := raft.NewInmemStore()
		quiet := func(p *scriptedPeer, rpc raft.RPC) { rpc.Respond(nil, errors.New("scripted peer is quiet")) }
		c := newScriptedCluster(t, store, store, quiet, quiet, func(conf *raft.Config) {
			conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Minute, time.Minute, time.Minute
		})
		// f leads term 2 and n1 just heard from it.
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 1, PrevLogTerm: 1}); err != nil || !resp.Success {
			t.Fatalf("heartbeat: %+v, %v", resp, err)
		}
		if granted, err := c.g.sendPreVote(3, 1, 1); err != nil || granted {
			t.Fatalf("pre-vote from g while n1 follows f: granted %v, %v; want refused", granted, err)
		}
		if granted, err := c.f.sendPreVote(3, 1, 1); err != nil || !granted {
			t.Fatalf("pre-vote from f, the leader n1 follows: granted %v, %v; want granted", granted, err)
		}
		if term := c.r.CurrentTerm(); term != 2 {
			t.Fatalf("a pre-vote moved n1 to term %d", term)
		}
	})
}

// TestStickiness_SurvivesRestart checks the premise lease reads rest on (read.go): a follower
// that acknowledged the leader's heartbeat refuses to vote for another candidate for
// HeartbeatTimeout, also when it restarts in between. Peers "l" (the leader) and "c" (a
// candidate) are bare transports, so the test sends every message itself.
func TestStickiness_SurvivesRestart(t *testing.T) {
	net := raft.NewInmemNetwork()
	lTrans, _ := net.NewTransport("l")
	cTrans, _ := net.NewTransport("c")
	defer lTrans.Close()
	defer cTrans.Close()
	store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	conf := fastConfig("a")
	conf.HeartbeatTimeout = time.Hour // no timer of a's fires during the test
	conf.ElectionTimeout = time.Hour
	conf.LeaderLeaseTimeout = time.Hour
	cluster := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "l", Address: "l"},
		{Suffrage: raft.Voter, ID: "a", Address: "a"},
		{Suffrage: raft.Voter, ID: "c", Address: "c"},
	}}
	start := func() *raft.Raft {
		tr, err := net.NewTransport("a")
		if err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(conf, raftest.NewRecordingFSM(), store, store, snaps, tr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	hdr := func(id string) raft.RPCHeader {
		return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: raft.ServerID(id), Addr: raft.ServerAddress(id)}
	}
	heartbeat := func() {
		var resp raft.AppendEntriesResponse
		req := &raft.AppendEntriesRequest{RPCHeader: hdr("l"), Term: 2, PrevLogIndex: 1, PrevLogTerm: 1}
		if err := lTrans.AppendEntries("a", "a", req, &resp); err != nil || !resp.Success {
			t.Fatalf("heartbeat: %v %+v", err, resp)
		}
	}
	voteGranted := func() bool {
		var resp raft.RequestVoteResponse
		req := &raft.RequestVoteRequest{RPCHeader: hdr("c"), Term: 3, LastLogIndex: 1, LastLogTerm: 1}
		if err := cTrans.RequestVote("a", "a", req, &resp); err != nil {
			t.Fatalf("vote: %v", err)
		}
		return resp.Granted
	}

	a := start()
	if err := a.BootstrapCluster(cluster).Error(); err != nil {
		t.Fatal(err)
	}
	heartbeat()
	if voteGranted() {
		t.Fatal("a granted c a vote right after acknowledging l's heartbeat")
	}
	// a crashes and restarts at once, well within HeartbeatTimeout of the acknowledgement.
	if err := a.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	a = start()
	defer a.Shutdown()
	if voteGranted() {
		t.Fatal("after a restart, a granted c a vote within HeartbeatTimeout of acknowledging l's heartbeat: l's lease still counts that acknowledgement")
	}
}
