package raft_test

import (
	"context"
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

// Writes seen from the client: Apply's timeouts, back-pressure, and exactly-once outcomes across
// a leader crash (docs/design.md, sections 3 and 4).

// slowLeaseOptions keep a cut-off leader leading for seconds: it cannot commit, yet it does
// not step down within the test's timeouts.
func slowLeaseOptions() raftest.Options {
	return raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		c.HeartbeatTimeout = 5 * time.Second
		c.ElectionTimeout = 5 * time.Second
		c.LeaderLeaseTimeout = 5 * time.Second
	}}
}

// requireElapsed fails unless d is within [want, want+10ms].
func requireElapsed(t *testing.T, what string, d, want time.Duration) {
	t.Helper()
	if d < want || d > want+10*time.Millisecond {
		t.Fatalf("%s took %v, want %v", what, d, want)
	}
}

// TestApply_TimeoutBoundsTheWholeWait: an Apply's timeout bounds the whole wait, commit
// included, not only the hand-over to the main loop (docs/design.md, section 3).
func TestApply_TimeoutBoundsTheWholeWait(t *testing.T) {
	raftest.Run(t, slowLeaseOptions(), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(time.Minute)
		r := c.Node(leader).Raft()
		mustApply(t, c, "warm-up")
		c.Isolate(leader)

		start := time.Now()
		err := r.Apply([]byte("cut-off"), 200*time.Millisecond).Error()
		if !errors.Is(err, raft.ErrTimeout) || errors.Is(err, raft.ErrEnqueueTimeout) {
			t.Fatalf("apply on a leader that cannot commit: %v, want ErrTimeout", err)
		}
		requireElapsed(t, "the timed-out apply", time.Since(start), 200*time.Millisecond)

		ctx, cancel := context.WithCancel(context.Background())
		f := r.ApplyContext(ctx, []byte("cancelled-after-enqueue"))
		cancel()
		if err := f.Error(); !errors.Is(err, context.Canceled) || !errors.Is(err, raft.ErrTimeout) {
			t.Fatalf("apply cancelled after it was queued: %v, want context.Canceled and ErrTimeout", err)
		}

		ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start = time.Now()
		if err := r.ApplyContext(ctx, []byte("deadline")).Error(); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, raft.ErrTimeout) {
			t.Fatalf("apply past its context deadline: %v, want context.DeadlineExceeded and ErrTimeout", err)
		}
		requireElapsed(t, "the apply with a context deadline", time.Since(start), 300*time.Millisecond)

		done, cancelDone := context.WithCancel(context.Background())
		cancelDone()
		if err := r.ApplyContext(done, []byte("never-queued")).Error(); !errors.Is(err, context.Canceled) || !errors.Is(err, raft.ErrEnqueueTimeout) {
			t.Fatalf("apply with a context cancelled beforehand: %v, want context.Canceled and ErrEnqueueTimeout (not applied)", err)
		}
		if r.State() != raft.Leader {
			t.Fatalf("leader stepped down (%v) within its lease; the test needs it to keep leading", r.State())
		}

		c.Heal()
		g := mustApply(t, c, "healed")
		c.WaitApplied(g.Index(), waitLong)
		for i := range c.Nodes() {
			if countOf(c, i, "never-queued") != 0 {
				t.Fatalf("node %d applied a command whose apply reported it was never queued", i)
			}
		}
		c.CheckSafety()
	})
}

// backpressureOptions give every node a hangingStore, an unbuffered apply queue and a
// leader that takes no more applies once four entries wait for its (hung) disk.
func backpressureOptions(lease time.Duration) raftest.Options {
	return withHangingStores(raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		c.BatchApplyCh = false
		c.MaxAppendEntries = 1
		c.LogStoreTimeout = time.Hour
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = lease, lease, lease
	}})
}

// fillApplyQueue hangs the leader's disk and applies until one apply cannot be queued; it
// returns that command, which reported ErrEnqueueTimeout after exactly its timeout.
func fillApplyQueue(t *testing.T, c *raftest.Cluster, leader int) string {
	t.Helper()
	r := c.Node(leader).Raft()
	hangingStoreOf(t, c, leader).Hang()
	for i := 0; i < 20; i++ {
		cmd := fmt.Sprintf("cmd-%d", i)
		start := time.Now()
		err := r.Apply([]byte(cmd), 200*time.Millisecond).Error()
		switch {
		case errors.Is(err, raft.ErrEnqueueTimeout):
			requireElapsed(t, "the apply that could not be queued", time.Since(start), 200*time.Millisecond)
			return cmd
		case err != nil && !errors.Is(err, raft.ErrTimeout):
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	t.Fatal("no apply reported ErrEnqueueTimeout although the leader stopped taking applies")
	return ""
}

// TestApply_CannotEnqueueReportsEnqueueTimeout: an Apply that cannot even be handed to a
// leader whose queue is full fails with ErrEnqueueTimeout, and the node serves again once the
// disk is back (docs/design.md, sections 3 and 4).
func TestApply_CannotEnqueueReportsEnqueueTimeout(t *testing.T) {
	raftest.Run(t, backpressureOptions(100*time.Millisecond), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		mustApply(t, c, "warm-up")
		store := hangingStoreOf(t, c, leader)
		rejected := fillApplyQueue(t, c, leader)
		if r.State() != raft.Leader {
			t.Fatalf("leader is %v; the test needs it to keep leading", r.State())
		}
		store.Release()
		g := mustApply(t, c, "released")
		c.WaitApplied(g.Index(), waitLong)
		for i := range c.Nodes() {
			if countOf(c, i, rejected) != 0 {
				t.Fatalf("node %d applied %q, whose apply reported ErrEnqueueTimeout (not applied)", i, rejected)
			}
		}
		c.CheckSafety()
	})
}

// TestApply_TimeoutCountsTimeSpentQueueing: an Apply's timeout runs from the call, so time
// spent waiting to be queued counts (docs/design.md, section 3).
func TestApply_TimeoutCountsTimeSpentQueueing(t *testing.T) {
	raftest.Run(t, backpressureOptions(5*time.Second), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(time.Minute)
		r := c.Node(leader).Raft()
		mustApply(t, c, "warm-up")
		c.Isolate(leader) // nothing commits; the long lease keeps it leading
		fillApplyQueue(t, c, leader)
		// The disk comes back 100ms into the next apply's 200ms: it is queued then, cannot
		// commit, and must still fail 200ms after the call, not 200ms after it was queued.
		releaser := time.AfterFunc(100*time.Millisecond, hangingStoreOf(t, c, leader).Release)
		defer releaser.Stop()
		start := time.Now()
		err := r.Apply([]byte("late"), 200*time.Millisecond).Error()
		if !errors.Is(err, raft.ErrTimeout) || errors.Is(err, raft.ErrEnqueueTimeout) {
			t.Fatalf("apply queued after 100ms that cannot commit: %v, want ErrTimeout", err)
		}
		requireElapsed(t, "the apply", time.Since(start), 200*time.Millisecond)
		if r.State() != raft.Leader {
			t.Fatalf("leader is %v; the test needs it to keep leading", r.State())
		}
	})
}

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
