package raft

import (
	"math/rand"
	"testing"
)

func TestQuorumMatchIndex_Table(t *testing.T) {
	cases := []struct {
		matches []uint64
		want    uint64
	}{
		{nil, 0},
		{[]uint64{7}, 7},
		{[]uint64{5, 3}, 3},
		{[]uint64{5, 3, 9}, 5},
		{[]uint64{1, 2, 3, 4}, 2},
		{[]uint64{10, 10, 0, 0, 10}, 10},
		{[]uint64{10, 9, 0, 0, 10}, 9},
	}
	for _, c := range cases {
		if got := quorumMatchIndex(append([]uint64(nil), c.matches...)); got != c.want {
			t.Errorf("quorumMatchIndex(%v) = %d, want %d", c.matches, got, c.want)
		}
	}
}

// naiveQuorum is the oracle: the largest candidate index that at least a majority reached.
func naiveQuorum(matches []uint64) uint64 {
	var best uint64
	for _, cand := range matches {
		n := 0
		for _, m := range matches {
			if m >= cand {
				n++
			}
		}
		if n >= len(matches)/2+1 && cand > best {
			best = cand
		}
	}
	return best
}

func TestQuorumMatchIndex_MatchesNaiveOracle(t *testing.T) {
	seed := int64(20261121)
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < 20000; i++ {
		n := 1 + rng.Intn(9)
		matches := make([]uint64, n)
		for j := range matches {
			matches[j] = uint64(rng.Intn(20))
		}
		want := naiveQuorum(matches)
		if got := quorumMatchIndex(append([]uint64(nil), matches...)); got != want {
			t.Fatalf("seed %d case %d: quorumMatchIndex(%v) = %d, oracle %d", seed, i, matches, got, want)
		}
	}
}

func TestCommitment_NeverCommitsBeforeStartIndex(t *testing.T) {
	ch := make(chan struct{}, 1)
	c := newCommitment(ch, []ServerID{"a", "b", "c"}, 10)
	c.match("a", 9)
	c.match("b", 9)
	if got := c.getCommitIndex(); got != 0 {
		t.Fatalf("committed %d from entries of an older term; want 0", got)
	}
	select {
	case <-ch:
		t.Fatal("notified without a commit")
	default:
	}
	c.match("a", 10)
	if got := c.getCommitIndex(); got != 0 {
		t.Fatalf("committed %d although the quorum index 9 precedes the term's start 10", got)
	}
	c.match("b", 11)
	if got := c.getCommitIndex(); got != 10 {
		t.Fatalf("commit = %d, want 10 (a=10, b=11, c=0)", got)
	}
	select {
	case <-ch:
	default:
		t.Fatal("commit moved without a notification")
	}
}

func TestCommitment_IgnoresNonVotersAndStaleReports(t *testing.T) {
	ch := make(chan struct{}, 1)
	c := newCommitment(ch, []ServerID{"a", "b", "c"}, 1)
	c.match("x", 100)
	if got := c.getCommitIndex(); got != 0 {
		t.Fatalf("non-voter counted: commit %d", got)
	}
	c.match("a", 5)
	c.match("b", 5)
	c.match("b", 3)
	if got := c.getCommitIndex(); got != 5 {
		t.Fatalf("commit = %d, want 5", got)
	}
	c.setVoters([]ServerID{"a", "d", "e"})
	if got := c.getCommitIndex(); got != 5 {
		t.Fatalf("commit went backwards to %d after a voter change", got)
	}
	c.match("d", 8)
	c.match("a", 8)
	if got := c.getCommitIndex(); got != 8 {
		t.Fatalf("commit = %d, want 8", got)
	}
}
