package raft_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
	"github.com/raftkit/raft/raftest/memnet"
)

// applyOutcome is what a client learned about one command.
type applyOutcome uint8

const (
	outcomePending applyOutcome = iota // the client never finished with it
	outcomeAcked                       // Apply succeeded: it must be applied exactly once
	outcomeMaybe                       // the outcome is unknown: applied at most once
)

// applyUntilKnown applies cmd through whoever leads, retrying with the same bytes only while
// the error says the command was not applied (ErrNotLeader, ErrEnqueueTimeout). Any other
// error leaves the outcome unknown, and retrying could apply the command twice, so it stops.
func applyUntilKnown(c *raftest.Cluster, cmd []byte, giveUp time.Time) applyOutcome {
	for time.Now().Before(giveUp) {
		if leader := c.Leader(); leader >= 0 {
			if r := c.Node(leader).Raft(); r != nil {
				err := r.Apply(cmd, 2*time.Second).Error()
				switch {
				case err == nil:
					return outcomeAcked
				case !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrEnqueueTimeout):
					// ErrLeadershipLost, ErrTimeout, ErrRaftShutdown: maybe applied.
					return outcomeMaybe
				}
			}
		}
		timer := time.NewTimer(time.Millisecond) // no leader known yet: look again shortly
		<-timer.C
	}
	return outcomePending
}

func TestRaft_TenThousandConcurrentAppliesAcrossLeaderCrash(t *testing.T) {
	const workers, total = 32, 10000
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		c.WaitLeader(waitLong)
		// Latency makes virtual time pass while requests are in flight, so the crash below
		// lands in the middle of the traffic; duplicates exercise idempotent appends.
		c.Net.SetDefaultFaults(memnet.LinkFaults{MinDelay: time.Millisecond, MaxDelay: 4 * time.Millisecond, DuplicateRate: 0.02})
		outcomes := make([]applyOutcome, total) // each slot written by one worker
		var finished atomic.Int64
		giveUp := time.Now().Add(time.Minute)
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < total; i += workers {
					outcomes[i] = applyUntilKnown(c, fmt.Appendf(nil, "cmd-%05d", i), giveUp)
					finished.Add(1)
				}
			}()
		}
		c.WaitFor(time.Minute, "half of the commands to finish", func() bool { return finished.Load() >= total/2 })
		old := c.Leader()
		if old < 0 {
			t.Fatal("no leader midway")
		}
		t.Logf("crashing leader %d with %d finished", old, finished.Load())
		c.Crash(old)
		c.WaitFor(time.Minute, "a new leader", func() bool { l := c.Leader(); return l >= 0 && l != old })
		c.Start(old)
		wg.Wait()

		g := mustApply(t, c, "final")
		c.WaitApplied(g.Index(), waitLong)
		acked, maybe := checkAppliedOnce(t, c, outcomes)
		t.Logf("seed %d: %d acknowledged, %d with unknown outcome, %d leader terms", c.Seed, acked, maybe, c.LeaderTerms())
		if acked < total*9/10 {
			t.Fatalf("only %d of %d commands were acknowledged", acked, total)
		}
		c.CheckSafety()
	})
}

// checkAppliedOnce checks every node's FSM: each acknowledged command exactly once, no
// command twice, nothing the clients did not send, and the same sequence on every node. It
// returns how many commands were acknowledged and how many had an unknown outcome.
func checkAppliedOnce(t *testing.T, c *raftest.Cluster, outcomes []applyOutcome) (acked, maybe int) {
	t.Helper()
	for i, o := range outcomes {
		switch o {
		case outcomeAcked:
			acked++
		case outcomeMaybe:
			maybe++
		default:
			t.Fatalf("command %d never got an outcome", i)
		}
	}
	first := recorded(c, 0)
	for n := range c.Nodes() {
		got := recorded(c, n)
		if !slices.Equal(got, first) {
			t.Fatalf("node %d applied a different sequence than node 0 (%d vs %d commands)", n, len(got), len(first))
		}
		counts := make([]int, len(outcomes))
		for _, cmd := range got {
			var i int
			if cmd == "final" {
				continue
			}
			if _, err := fmt.Sscanf(cmd, "cmd-%05d", &i); err != nil || i < 0 || i >= len(outcomes) {
				t.Fatalf("node %d applied %q, which no client sent", n, cmd)
			}
			counts[i]++
		}
		for i, k := range counts {
			if k > 1 {
				t.Fatalf("node %d applied command %d %d times", n, i, k)
			}
			if outcomes[i] == outcomeAcked && k != 1 {
				t.Fatalf("node %d lost acknowledged command %d", n, i)
			}
		}
	}
	return acked, maybe
}
