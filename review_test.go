package raft_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

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
