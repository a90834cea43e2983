package raft_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// waitLong bounds the waits of cluster tests: generous, since most run in virtual time.
const waitLong = 10 * time.Second

// recorded returns the commands node i applied, as strings.
func recorded(c *raftest.Cluster, i int) []string {
	var out []string
	for _, e := range c.Node(i).FSM().(interface{ Entries() []raftest.Entry }).Entries() {
		out = append(out, commandName(e.Data))
	}
	return out
}

// countOf counts how often cmd was applied on node i.
func countOf(c *raftest.Cluster, i int, cmd string) int {
	n := 0
	for _, s := range recorded(c, i) {
		if s == cmd {
			n++
		}
	}
	return n
}

// mustApply applies cmd through the cluster and fails the test on error.
func mustApply(t *testing.T, c *raftest.Cluster, cmd string) raft.ApplyFuture {
	t.Helper()
	f, err := c.Apply([]byte(cmd), waitLong)
	if err != nil {
		t.Fatalf("apply %q: %v", cmd, err)
	}
	return f
}

// others returns the indexes of the nodes other than i.
func others(c *raftest.Cluster, i int) []int {
	var out []int
	for j := range c.Nodes() {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

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

// TestReplication_EntryOnOnlyAMajorityCommits: an entry that reaches only a majority (two of
// five nodes cut off) commits, and the others apply it exactly once after healing (scenario
// R2, docs/design.md sections 3 and 12).
func TestReplication_EntryOnOnlyAMajorityCommits(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 5}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		rest := others(c, leader)
		// The leader plus two followers are a majority of five; two followers are cut off.
		c.Partition([]int{leader, rest[0], rest[1]}, []int{rest[2]}, []int{rest[3]})
		f := c.Node(leader).Raft().Apply([]byte("majority"), waitLong)
		if err := f.Error(); err != nil {
			t.Fatalf("apply with a majority connected: %v", err)
		}
		for _, i := range []int{rest[2], rest[3]} {
			if countOf(c, i, "majority") != 0 {
				t.Fatalf("cut-off node %d applied the entry", i)
			}
		}
		c.Heal()
		c.WaitApplied(f.Index(), waitLong)
		for i := range c.Nodes() {
			if countOf(c, i, "majority") != 1 {
				t.Fatalf("node %d applied the entry %d times, want 1", i, countOf(c, i, "majority"))
			}
		}
		c.CheckSafety()
	})
}

// TestReplication_WithoutMajorityNeverCommitsAndClientGetsError: with less than a majority
// nothing commits, and every client gets an error within its timeout, never a hang or a
// false success (scenario R3, docs/design.md sections 3 and 12).
func TestReplication_WithoutMajorityNeverCommitsAndClientGetsError(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		c.Isolate(leader)
		var futures []raft.ApplyFuture
		for i := 0; i < 10; i++ {
			futures = append(futures, r.Apply([]byte(fmt.Sprintf("minority-%d", i)), 2*time.Second))
		}
		for i, f := range futures {
			start := time.Now()
			err := f.Error()
			if err == nil {
				t.Fatalf("apply %d succeeded without a majority", i)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("apply %d took %v to fail", i, time.Since(start))
			}
			if !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrTimeout) && !errors.Is(err, raft.ErrNotLeader) {
				t.Fatalf("apply %d: unexpected error %v", i, err)
			}
		}
		// The majority commits an entry of a newer term before the partition heals, so the
		// isolated node's entries fall behind its log and are overwritten. Healed earlier, the
		// old leader could win again with its longer log and commit them, which its clients'
		// ErrLeadershipLost allows (seed 2877346550496929635 did).
		c.WaitFor(waitLong, "a new leader among the others with its first entry committed", func() bool {
			l := c.Leader()
			if l < 0 || l == leader {
				return false
			}
			// Past the isolated leader's commit index, only the new term's first entry.
			nl := c.Node(l).Raft()
			return nl != nil && nl.CommitIndex() > r.CommitIndex()
		})
		c.Heal()
		g := mustApply(t, c, "healed")
		c.WaitApplied(g.Index(), waitLong)
		for i := range c.Nodes() {
			for _, cmd := range recorded(c, i) {
				if cmd != "healed" {
					t.Fatalf("node %d applied %q, which never had a majority", i, cmd)
				}
			}
		}
		c.CheckSafety()
	})
}

// figure8Logs lays down the history of the Raft paper's Figure 8 (c) on five nodes. Index 1
// is the bootstrap configuration (term 1). Entry "x" of term 2 sits at index 2 on s1, s2 and
// s3, a majority, but was never committed; s1 (term 4) also has an entry of term 4 at index
// 3; s5 led term 3 and holds "z" of term 3 at index 2.
func figure8Logs(t *testing.T) func(nodes []*raftest.Node) {
	return func(nodes []*raftest.Node) {
		put := func(n *raftest.Node, term uint64, entries ...*raft.Log) {
			if err := n.Logs.StoreLogs(entries); err != nil {
				t.Fatal(err)
			}
			if err := n.Stable.SetUint64([]byte("CurrentTerm"), term); err != nil {
				t.Fatal(err)
			}
		}
		x := func() *raft.Log { return &raft.Log{Index: 2, Term: 2, Type: raft.LogCommand, Data: []byte("x")} }
		put(nodes[0], 4, x(), &raft.Log{Index: 3, Term: 4, Type: raft.LogCommand, Data: []byte("y")})
		put(nodes[1], 2, x())
		put(nodes[2], 2, x())
		put(nodes[3], 1)
		put(nodes[4], 3, &raft.Log{Index: 2, Term: 3, Type: raft.LogCommand, Data: []byte("z")})
	}
}

// TestReplication_OldTermEntryCommitsOnlyThroughCurrentTerm replays the history of the
// paper's Figure 8: an entry of an old term stored on a majority commits only together with
// an entry of the current term, and a node with an older log can never win and truncate it
// (scenario F8, docs/design.md sections 3 and 12).
func TestReplication_OldTermEntryCommitsOnlyThroughCurrentTerm(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 5, Prepare: figure8Logs(t)}, func(t *testing.T, c *raftest.Cluster) {
		// s5 is cut off: among s1-s4 only s1, s2 or s3 can win (s4's log is behind theirs), and
		// whoever wins holds x at index 2.
		c.Isolate(4)
		leader := c.WaitLeader(waitLong)
		if leader == 3 || leader == 4 {
			t.Fatalf("node %d with an out-of-date log won", leader)
		}
		r := c.Node(leader).Raft()
		f := mustApply(t, c, "current-term")
		if f.Index() <= 2 {
			t.Fatalf("current term entry at %d", f.Index())
		}
		// x committed only together with an entry of the leader's term: the commit index jumped
		// past the leader's first entry of its term, never stopping at 2.
		if ci := r.CommitIndex(); ci < f.Index() {
			t.Fatalf("commit index %d below the current-term entry %d", ci, f.Index())
		}
		// Now crash the leader and let s5 back: s5's log (last term 3) is behind the committed
		// entries of the newer term, so it can never win and overwrite x.
		c.Crash(leader)
		c.Heal()
		c.Start(leader)
		g := mustApply(t, c, "after-s5-rejoined")
		c.WaitApplied(g.Index(), waitLong)
		for i := range c.Nodes() {
			got := recorded(c, i)
			if len(got) == 0 || got[0] != "x" {
				t.Fatalf("node %d applied %v: the committed entry x is not first", i, got)
			}
			if countOf(c, i, "z") != 0 {
				t.Fatalf("node %d applied z, an entry that was never committed", i)
			}
		}
		c.CheckSafety()
	})
}

// TestReplication_LeaderCrashesBeforeFollowersLearnCommit: the leader applies and answers,
// then crashes before the followers learn the commit index; the next leader's no-op commits
// the entry and every node applies it exactly once (scenario N1, docs/design.md sections 3
// and 12).
func TestReplication_LeaderCrashesBeforeFollowersLearnCommit(t *testing.T) {
	var slowCommit atomic.Bool
	slowCommit.Store(true)
	opts := raftest.Options{Nodes: 3, Config: func(conf *raft.Config) {
		// Followers learn a commit index only from the next AppendEntries; with no further
		// writes and a long commit timeout, none comes before the crash.
		if slowCommit.Load() {
			conf.CommitTimeout = time.Hour
		}
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		mustApply(t, c, "warm-up")
		f := r.Apply([]byte("acked"), waitLong)
		if err := f.Error(); err != nil {
			t.Fatalf("apply: %v", err)
		}
		behind := 0
		for _, i := range others(c, leader) {
			if c.Node(i).Raft().CommitIndex() < f.Index() {
				behind++
			}
		}
		c.Crash(leader)
		if behind == 0 {
			t.Fatal("followers learned the commit index before the crash")
		}
		// The survivors restart with the normal commit timeout (their stores keep everything),
		// elect a leader whose no-op commits the acknowledged entry, and the old leader returns.
		slowCommit.Store(false)
		for _, i := range others(c, leader) {
			c.Restart(i)
		}
		c.WaitLeader(waitLong)
		c.Start(leader)
		g := mustApply(t, c, "next")
		c.WaitApplied(g.Index(), waitLong)
		for i := range c.Nodes() {
			if n := countOf(c, i, "acked"); n != 1 {
				t.Fatalf("node %d applied the acknowledged entry %d times, want exactly once", i, n)
			}
		}
		c.CheckSafety()
	})
}

// TestReplication_ConflictingSuffixIsTruncated: an isolated old leader's uncommitted suffix
// is truncated when it rejoins, its clients got errors, and its log converges with the
// majority's (scenario T1, docs/design.md sections 3 and 12).
func TestReplication_ConflictingSuffixIsTruncated(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		old := c.WaitLeader(waitLong)
		base := mustApply(t, c, "base")
		c.WaitApplied(base.Index(), waitLong)
		r := c.Node(old).Raft()
		c.Isolate(old)
		// The isolated leader appends entries only it will ever hold.
		var stale []raft.ApplyFuture
		for i := 0; i < 5; i++ {
			stale = append(stale, r.Apply([]byte(fmt.Sprintf("stale-%d", i)), 0))
		}
		rest := others(c, old)
		c.Partition([]int{old}, rest)
		c.WaitFor(waitLong, "a new leader in the majority", func() bool {
			l := c.Leader()
			return l >= 0 && l != old
		})
		for i := 0; i < 8; i++ {
			mustApply(t, c, fmt.Sprintf("fresh-%d", i))
		}
		for _, f := range stale {
			if f.Error() == nil {
				t.Fatal("an entry appended by a cut-off leader reported success")
			}
		}
		c.Heal()
		g := mustApply(t, c, "converged")
		c.WaitApplied(g.Index(), waitLong)
		want := recorded(c, rest[0])
		for i := range c.Nodes() {
			got := recorded(c, i)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("node %d applied %v, node %d applied %v", i, got, rest[0], want)
			}
		}
		if c.Node(old).Raft().LastIndex() != c.Node(rest[0]).Raft().LastIndex() {
			t.Fatalf("old leader's log did not converge: last index %d vs %d",
				c.Node(old).Raft().LastIndex(), c.Node(rest[0]).Raft().LastIndex())
		}
		c.CheckSafety()
	})
}

// TestQuorumLoss_TwoOfThreeDownWritesFailReadsRefuse: with two of three nodes down, writes,
// barriers, VerifyLeader and ReadIndex all fail with a clear error, and the lone leader steps
// down (scenario C1, docs/design.md sections 5, 6 and 12).
func TestQuorumLoss_TwoOfThreeDownWritesFailReadsRefuse(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		for _, i := range others(c, leader) {
			c.Crash(i)
		}
		start := time.Now()
		err := r.Apply([]byte("w"), time.Second).Error()
		if err == nil {
			t.Fatal("write succeeded with two of three nodes down")
		}
		if !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrTimeout) && !errors.Is(err, raft.ErrNotLeader) {
			t.Fatalf("write error %v is not one of ErrLeadershipLost, ErrTimeout, ErrNotLeader", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("write took %v to fail", time.Since(start))
		}
		if err := r.VerifyLeader().Error(); err == nil {
			t.Fatal("VerifyLeader confirmed leadership with two of three nodes down: a read would claim linearizability")
		}
		if err := r.Barrier(time.Second).Error(); err == nil {
			t.Fatal("Barrier succeeded with two of three nodes down")
		}
		if err := r.ReadIndex(time.Second).Error(); err == nil {
			t.Fatal("ReadIndex succeeded with two of three nodes down: a read would claim linearizability")
		}
		c.WaitFor(waitLong, "the lone node to stop leading", func() bool { return r.State() != raft.Leader })
	})
}
