package raft_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// A voter whose disk was lost and that is restarted in place (same ID, same address, empty
// stores) must not help elect a leader that lacks the entries it acknowledged before (issue
// 16). Writes are committed by the leader and follower b while c is cut off; b's disk is
// wiped and b restarts; the leader crashes and c comes back. b and c together are a quorum,
// and c lacks the writes: b must refuse its vote until it caught up from a leader. Without the
// fence c won and committed its own entries over the acknowledged ones (the safety checker
// saw different entries applied at one index). Once the old leader is back, it is elected,
// b catches up, votes again, and every acknowledged write is on every node.
func TestCatchUpFence_WipedVoterCannotElectStaleLeader(t *testing.T) {
	raftest.Run(t, raftest.Options{}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		b, stale := (leader+1)%3, (leader+2)%3
		c.Isolate(stale)
		var acked []string
		for i := 0; i < 20; i++ {
			cmd := fmt.Sprintf("w%d", i)
			if err := c.Node(leader).Raft().Apply([]byte(cmd), waitLong).Error(); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			acked = append(acked, cmd)
		}
		commit := c.Node(leader).Raft().CommitIndex()

		c.Wipe(b)
		c.Start(b)
		c.Crash(leader)
		c.Heal()
		// Give b and c many election timeouts: neither may become leader.
		elected := -1
		raftest.Eventually(5*time.Second, func() bool {
			for _, i := range []int{b, stale} {
				if c.Node(i).Raft().State() == raft.Leader {
					elected = i
					return true
				}
			}
			return false
		})
		if elected >= 0 {
			t.Fatalf("node %d became leader with the wiped node's vote; the acknowledged writes up to %d are on neither", elected, commit)
		}
		if got := c.Node(b).Raft().Stats()["catching_up"]; got != "until a leader replicates" {
			t.Fatalf("wiped node's catching_up = %q, want it fenced and waiting for a leader", got)
		}

		c.Start(leader)
		c.WaitLeader(waitLong)
		if err := c.Node(c.Leader()).Raft().Barrier(waitLong).Error(); err != nil {
			t.Fatalf("barrier: %v", err)
		}
		last := c.Node(c.Leader()).Raft().LastIndex()
		got := c.WaitSameCommands(last, waitLong)
		for _, cmd := range acked {
			if !slices.Contains(got, cmd) {
				t.Fatalf("acknowledged write %s is lost: the cluster applied %v", cmd, got)
			}
		}
		c.WaitFor(waitLong, "the wiped node to lift its fence", func() bool {
			return c.Node(b).Raft().Stats()["catching_up"] == "false"
		})
		c.CheckSafety()
	})
}

// The fence survives a crash during catch-up: a wiped node that restarts after storing part
// of the leader's log (so it no longer starts empty) stays fenced until it caught up. It then
// votes again: with the other follower down, the cluster still elects a leader.
func TestCatchUpFence_SurvivesCrashWhileCatchingUp(t *testing.T) {
	raftest.Run(t, raftest.Options{Config: func(c *raft.Config) { c.MaxAppendEntries = 4 }}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		b, other := (leader+1)%3, (leader+2)%3
		for i := 0; i < 40; i++ {
			if err := c.Node(leader).Raft().Apply(fmt.Appendf(nil, "w%d", i), waitLong).Error(); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		c.Wipe(b)
		// b crashes inside its third log write from the leader: it holds a few entries (and
		// a term), not the whole log.
		c.Start(b)
		c.CrashAt(b, raftest.CrashInStoreLogs, 2)
		c.WaitFor(waitLong, "the wiped node to crash while catching up", func() bool { return !c.Node(b).Running() })
		if last, err := c.Node(b).Logs.LastIndex(); err != nil || last == 0 {
			t.Fatalf("the wiped node holds entries up to %d (%v), want some", last, err)
		}
		c.Start(b)
		if got := c.Node(b).Raft().Stats()["catching_up"]; got == "false" {
			t.Fatal("the fence did not survive the crash")
		}
		c.WaitFor(waitLong, "the wiped node to lift its fence", func() bool {
			return c.Node(b).Raft().Stats()["catching_up"] == "false"
		})
		// b votes again: without the other follower, b and the old leader elect a leader.
		c.Crash(other)
		c.Crash(leader)
		c.Start(leader)
		c.WaitLeader(waitLong)
		c.CheckSafety()
	})
}

// A server bootstrapped with a configuration that lists servers starting with empty stores
// elects no leader by default (they cannot tell a new cluster from a lost disk); with
// Config.EmptyStartVotes on them it does, as before.
func TestCatchUpFence_SingleBootstrapNeedsEmptyStartVotes(t *testing.T) {
	for _, votes := range []bool{false, true} {
		t.Run(fmt.Sprintf("EmptyStartVotes=%v", votes), func(t *testing.T) {
			opts := raftest.Options{
				NoBootstrap: true,
				Config:      func(c *raft.Config) { c.EmptyStartVotes = votes },
				Prepare: func(nodes []*raftest.Node) {
					var servers []raft.Server
					for _, n := range nodes {
						servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.ID, Address: n.Addr})
					}
					conf := raft.DefaultConfig()
					conf.LocalID = nodes[0].ID
					n := nodes[0]
					if err := raft.BootstrapCluster(conf, n.Logs, n.Stable, n.Snaps, nil, raft.Configuration{Servers: servers}); err != nil {
						t.Fatal(err)
					}
				},
			}
			raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
				if !votes {
					// Many election timeouts: no leader may appear in any of them.
					if raftest.Eventually(5*time.Second, func() bool { return c.Leader() >= 0 }) {
						t.Fatalf("node %d became leader with votes of servers that started empty", c.Leader())
					}
					if got := c.Node(1).Raft().Stats()["catching_up"]; got != "until a leader replicates" {
						t.Fatalf("empty server's catching_up = %q", got)
					}
					return
				}
				l := c.WaitLeader(waitLong)
				if err := c.Node(l).Raft().Apply([]byte("x"), waitLong).Error(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// A server added to a running cluster starts empty; the fence costs it nothing: it catches up
// as a nonvoter, is promoted, and then votes (the cluster survives losing an original voter).
func TestCatchUpFence_AddedServerVotesAfterCatchUp(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 4, InitialVoters: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		for i := 0; i < 10; i++ {
			if err := c.Node(leader).Raft().Apply(fmt.Appendf(nil, "w%d", i), waitLong).Error(); err != nil {
				t.Fatal(err)
			}
		}
		n4 := c.Node(3)
		if got := n4.Raft().Stats()["catching_up"]; got != "until a leader replicates" {
			t.Fatalf("new server's catching_up = %q", got)
		}
		if err := c.Node(leader).Raft().AddVoter(n4.ID, n4.Addr, 0, waitLong).Error(); err != nil {
			t.Fatal(err)
		}
		c.WaitFor(waitLong, "the new server to lift its fence", func() bool {
			return n4.Raft().Stats()["catching_up"] == "false"
		})
		// Two of four voters down leaves no quorum; one down (the leader) must leave one,
		// which needs the new server's vote.
		c.Crash(leader)
		c.WaitLeader(waitLong)
		c.CheckSafety()
	})
}

// A follower wiped and restarted under a live leader is repaired by that leader. The leader
// used to keep the follower's nextIndex above the match index it acknowledged before the wipe:
// the follower refused every request and the leader resent at once, forever (in virtual time
// the bubble never advanced).
func TestCatchUpFence_WipedFollowerRepairedBySameLeader(t *testing.T) {
	raftest.Run(t, raftest.Options{}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		term := c.Node(leader).Raft().CurrentTerm()
		b := (leader + 1) % 3
		for i := 0; i < 10; i++ {
			if err := c.Node(leader).Raft().Apply(fmt.Appendf(nil, "w%d", i), waitLong).Error(); err != nil {
				t.Fatal(err)
			}
		}
		c.Wipe(b)
		c.Start(b)
		last := c.Node(leader).Raft().LastIndex()
		c.WaitSameCommands(last, waitLong)
		c.WaitFor(waitLong, "the wiped node to lift its fence", func() bool {
			return c.Node(b).Raft().Stats()["catching_up"] == "false"
		})
		if got := c.Node(leader).Raft().CurrentTerm(); got != term || c.Leader() != leader {
			t.Fatalf("leadership changed (term %d, was %d): the repair should not need an election", got, term)
		}
		c.CheckSafety()
	})
}
