package raft_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
	"github.com/raftkit/raft/raftest/memnet"
)

func TestReadIndex_SeesEveryCompletedWrite(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		for round := 0; round < 3; round++ {
			w := mustApply(t, c, fmt.Sprintf("w%d", round))
			// A new leader right after the write: its commit index may lag until its no-op
			// commits, and ReadIndex must wait for that.
			leader := c.WaitLeader(waitLong)
			c.Crash(leader)
			next := c.WaitLeader(waitLong)
			r := c.Node(next).Raft()
			f := r.ReadIndex(waitLong)
			if err := f.Error(); err != nil {
				t.Fatalf("read index: %v", err)
			}
			if f.Index() < w.Index() {
				t.Fatalf("read index %d is behind the completed write at %d", f.Index(), w.Index())
			}
			if got := recorded(c, next); len(got) == 0 || got[len(got)-1] != fmt.Sprintf("w%d", round) {
				t.Fatalf("after ReadIndex the leader's FSM ends with %v, want w%d", got, round)
			}
			c.Start(leader)
		}
	})
}

// A read on any follower or non-voter, right after the leader acknowledged a write, sees the
// write: the follower asks the leader for a read index and waits for its own FSM.
func TestReadIndex_FollowerReadSeesAcknowledgedWrite(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 4, InitialVoters: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		nonvoter := c.Node(3)
		if err := c.Node(leader).Raft().AddNonvoter(nonvoter.ID, nonvoter.Addr, 0, waitLong).Error(); err != nil {
			t.Fatalf("add nonvoter: %v", err)
		}
		c.WaitFor(waitLong, "the non-voter to know the leader", func() bool {
			_, id := nonvoter.Raft().LeaderWithID()
			return id != ""
		})
		// A slow link to the non-voter keeps its log behind the leader's acknowledgements.
		c.Net.SetFaults(c.Node(leader).Addr, nonvoter.Addr, memnet.LinkFaults{MinDelay: 20 * time.Millisecond, MaxDelay: 30 * time.Millisecond})
		for i := 0; i < 20; i++ {
			cmd := fmt.Sprintf("w%d", i)
			mustApply(t, c, cmd)
			for _, n := range append(others(c, leader), 3) {
				f := c.Node(n).Raft().ReadIndexContext(context.Background())
				if err := f.Error(); err != nil {
					t.Fatalf("read on node %d: %v", n, err)
				}
				if got := recorded(c, n); len(got) == 0 || got[len(got)-1] != cmd {
					t.Fatalf("read on node %d after acknowledged %s sees %v", n, cmd, got)
				}
				if kind := raft.ReadKind(f); kind != "follower" {
					t.Fatalf("read on node %d served as %q, want follower", n, kind)
				}
			}
		}
	})
}

// A burst of 1,000 concurrent reads costs at most two confirmation rounds on the leader (the
// one the burst's first read started, and one for every read that queued behind it), and a
// burst on a follower at most two ReadIndex RPCs.
func TestReadIndex_BurstSharesOneRound(t *testing.T) {
	const reads = 1000
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		mustApply(t, c, "x")
		lr := c.Node(leader).Raft()
		// Every message takes 5ms (virtual time): the whole burst is issued while the first
		// round is out, as on a real network where a round trip outlasts a burst.
		c.Net.SetDefaultFaults(memnet.LinkFaults{MinDelay: 5 * time.Millisecond, MaxDelay: 5 * time.Millisecond})
		burst := func(r *raft.Raft) {
			var wg sync.WaitGroup
			errs := make(chan error, reads)
			for i := 0; i < reads; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := r.ReadIndexContext(context.Background()).Error(); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("read in burst: %v", err)
			}
		}
		rounds0, _ := raft.ReadCounters(lr)
		sent0 := c.Net.Stats().Sent
		burst(lr)
		rounds, _ := raft.ReadCounters(lr)
		sent := c.Net.Stats().Sent - sent0
		t.Logf("leader burst of %d reads: %d rounds, %d messages", reads, rounds-rounds0, sent)
		if rounds-rounds0 > 2 {
			t.Fatalf("%d concurrent reads took %d rounds, want at most 2", reads, rounds-rounds0)
		}
		// Each round is one heartbeat and its answer per follower; allow the periodic
		// heartbeats and commit-index updates of the time the burst took.
		if sent > 4*(rounds-rounds0)+40 {
			t.Fatalf("%d concurrent reads sent %d messages", reads, sent)
		}

		follower := c.Node(others(c, leader)[0]).Raft()
		rounds0, requests0 := raft.ReadCounters(lr)
		burst(follower)
		rounds, requests := raft.ReadCounters(lr)
		t.Logf("follower burst of %d reads: %d ReadIndex RPCs, %d rounds", reads, requests-requests0, rounds-rounds0)
		if requests-requests0 > 2 || rounds-rounds0 > 2 {
			t.Fatalf("%d concurrent follower reads took %d RPCs and %d rounds, want at most 2 each", reads, requests-requests0, rounds-rounds0)
		}
	})
}

// A leader cut off from the majority never answers a read with a value older than a write the
// new majority acknowledged: every read on it that starts after that write fails. In the
// round variant the old leader (n1) has a longer HeartbeatTimeout and LeaderLeaseTimeout than
// the others, so it still believes it leads when the new leader acknowledges the write: a
// deposed leader that does not know yet. (Rounds do not depend on timeouts or clocks; the
// lease variant keeps the timeouts equal, as a lease requires.)
func TestReadIndex_DeposedLeaderErrorsNeverStale(t *testing.T) {
	for _, lease := range []bool{false, true} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			opts := raftest.Options{Nodes: 5, Config: func(conf *raft.Config) {
				conf.LeaseReads = lease
				if !lease && conf.LocalID == "n1" {
					conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Second, time.Second, time.Second
				}
			}}
			raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
				first := c.WaitLeader(waitLong)
				if first != 0 {
					if err := c.Node(first).Raft().LeadershipTransferToServer(c.Node(0).ID, c.Node(0).Addr).Error(); err != nil {
						t.Fatalf("transfer to n1: %v", err)
					}
				}
				c.WaitFor(waitLong, "n1 to lead", func() bool { return c.Leader() == 0 })
				mustApply(t, c, "before")
				<-time.After(200 * time.Millisecond) // let a lease build up
				r := c.Node(0).Raft()
				c.Isolate(0)
				var (
					mu              sync.Mutex
					acked           time.Time
					stale           []string
					succeeded, fail int
				)
				done := make(chan struct{})
				// Reads on the old leader, in a loop, while the majority elects and writes.
				go func() {
					defer close(done)
					for r.State() == raft.Leader {
						start := time.Now()
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
						err := r.ReadIndexContext(ctx).Error()
						cancel()
						mu.Lock()
						if err == nil {
							succeeded++
							if !acked.IsZero() && start.After(acked) {
								stale = append(stale, fmt.Sprintf("read started %v after the write succeeded", start.Sub(acked)))
							}
						} else {
							fail++
						}
						mu.Unlock()
						<-time.After(time.Millisecond)
					}
				}()
				var nl int
				c.WaitFor(waitLong, "a new leader among the majority", func() bool {
					nl = c.Leader()
					return nl > 0
				})
				if err := c.Node(nl).Raft().Apply([]byte("after"), waitLong).Error(); err != nil {
					t.Fatalf("write on the new leader: %v", err)
				}
				mu.Lock()
				acked = time.Now()
				stillLeader := r.State() == raft.Leader
				mu.Unlock()
				<-done
				t.Logf("old leader answered %d reads and failed %d; still believed it led when the write was acknowledged: %v", succeeded, fail, stillLeader)
				if len(stale) > 0 {
					t.Fatalf("the deposed leader answered reads: %v", stale)
				}
				if !lease && !stillLeader {
					t.Fatal("the old leader had stepped down before the write: the test did not exercise a deposed leader")
				}
				if succeeded == 0 && lease {
					t.Fatal("no lease read succeeded on the old leader before the partition took effect")
				}
				if err := r.ReadIndexContext(context.Background()).Error(); err == nil {
					t.Fatal("read on the isolated old leader succeeded")
				}
				c.Heal()
			})
		})
	}
}

// 2 of 3 nodes down: a read fails with a clear error well before its context deadline, on the
// leader (it steps down: no quorum) and on a follower (its leader is gone).
func TestReadIndex_TwoOfThreeDownFailsBeforeDeadline(t *testing.T) {
	for _, survivor := range []string{"leader", "follower"} {
		for _, lease := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/lease=%v", survivor, lease), func(t *testing.T) {
				raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
					leader := c.WaitLeader(waitLong)
					mustApply(t, c, "x")
					keep := leader
					if survivor == "follower" {
						keep = others(c, leader)[0]
					}
					for i := range c.Nodes() {
						if i != keep {
							c.Crash(i)
						}
					}
					const deadline = 30 * time.Second
					ctx, cancel := context.WithTimeout(context.Background(), deadline)
					defer cancel()
					start := time.Now()
					err := c.Node(keep).Raft().ReadIndexContext(ctx, raft.WithLease(lease)).Error()
					took := time.Since(start)
					if lease && survivor == "leader" && err == nil {
						// The lease may still hold right after the crash: the lost followers
						// cannot have elected anyone. Once it ran out, reads must fail.
						<-time.After(200 * time.Millisecond)
						start = time.Now()
						err = c.Node(keep).Raft().ReadIndexContext(ctx, raft.WithLease(lease)).Error()
						took = time.Since(start)
					}
					if err == nil {
						t.Fatal("read succeeded with two of three nodes down")
					}
					if errors.Is(err, context.DeadlineExceeded) || took >= deadline/2 {
						t.Fatalf("read failed only at its deadline (%v after %v)", err, took)
					}
					if !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrNoLeader) && !errors.Is(err, raft.ErrNotLeader) {
						t.Fatalf("read error %v is not ErrLeadershipLost, ErrNoLeader or ErrNotLeader", err)
					}
					t.Logf("failed after %v: %v", took, err)
				})
			})
		}
	}
}

// A new leader serves no lease read until its term's entry committed and HeartbeatTimeout
// passed (an earlier leader's lease may still run); a leader in a transfer serves none.
func TestLeaseRead_RefusedAfterElectionAndDuringTransfer(t *testing.T) {
	opts := raftest.Options{Nodes: 3, Config: func(c *raft.Config) { c.LeaseReads = true }}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		f := r.ReadIndex(waitLong)
		if err := f.Error(); err != nil {
			t.Fatalf("read right after the election: %v", err)
		}
		if kind := raft.ReadKind(f); kind != "leader_round" {
			t.Fatalf("read right after the election served as %q, want leader_round", kind)
		}
		<-time.After(150 * time.Millisecond) // past HeartbeatTimeout (100ms)
		f = r.ReadIndex(waitLong)
		if err := f.Error(); err != nil || raft.ReadKind(f) != "leader_lease" {
			t.Fatalf("read once the lease holds: %v, served as %q, want leader_lease", err, raft.ReadKind(f))
		}
		// A follower's lease read is answered from the leader's lease too.
		ff := c.Node(others(c, leader)[0]).Raft().ReadIndex(waitLong)
		if err := ff.Error(); err != nil || raft.ReadKind(ff) != "follower_lease" {
			t.Fatalf("follower lease read: %v, served as %q, want follower_lease", err, raft.ReadKind(ff))
		}

		// A transfer to a target that cannot catch up (its link is cut) stays in progress.
		target := others(c, leader)[0]
		c.Net.Cut(c.Node(leader).Addr, c.Node(target).Addr)
		mustApply(t, c, "behind")
		tf := r.LeadershipTransferToServer(c.Node(target).ID, c.Node(target).Addr)
		for i := 0; i < 5; i++ {
			f = r.ReadIndex(waitLong)
			if err := f.Error(); err != nil {
				t.Fatalf("read during the transfer: %v", err)
			}
			if kind := raft.ReadKind(f); kind != "leader_round" {
				t.Fatalf("read during a transfer served as %q, want leader_round", kind)
			}
			<-time.After(20 * time.Millisecond)
		}
		if err := tf.Error(); !errors.Is(err, raft.ErrLeadershipTransferFailed) {
			t.Fatalf("transfer to a cut-off target: %v", err)
		}
		c.Heal()
		// The lease stays given up for the rest of the term.
		<-time.After(150 * time.Millisecond)
		if r.State() == raft.Leader {
			f = r.ReadIndex(waitLong)
			if err := f.Error(); err != nil || raft.ReadKind(f) != "leader_round" {
				t.Fatalf("read after a failed transfer: %v, served as %q, want leader_round", err, raft.ReadKind(f))
			}
		}
	})
}

// Retried and duplicated ReadIndex requests are safe: every request gets an index confirmed
// after it arrived, so a late duplicate or a retry after a lost answer never hands out an
// index older than a write acknowledged before the read began.
func TestReadIndex_DuplicatedAndRetriedRequestsNeverStale(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		f := others(c, leader)[0]
		la, fa := c.Node(leader).Addr, c.Node(f).Addr
		c.Net.SetFaults(fa, la, memnet.LinkFaults{DuplicateRate: 1, DropRate: 0.3, MaxDelay: 30 * time.Millisecond})
		c.Net.SetFaults(la, fa, memnet.LinkFaults{DropRate: 0.3, MaxDelay: 30 * time.Millisecond})
		fr := c.Node(f).Raft()
		for i := 0; i < 30; i++ {
			cmd := fmt.Sprintf("w%d", i)
			w, err := c.Apply([]byte(cmd), waitLong)
			if err != nil {
				continue // the faulty link may cost the leader its leadership; try again
			}
			for attempt := 0; ; attempt++ {
				rf := fr.ReadIndexContext(context.Background())
				if err := rf.Error(); err != nil {
					if attempt > 50 {
						t.Fatalf("read %d failed 50 times: %v", i, err)
					}
					// Retry as a client would: after the follower learns of a leader (a
					// follower without one fails at once, so retrying sooner takes no time).
					c.WaitFor(waitLong, "the follower to know a leader", func() bool { return fr.Leader() != "" })
					continue
				}
				if rf.Index() < w.Index() {
					t.Fatalf("read index %d is older than the acknowledged write at %d", rf.Index(), w.Index())
				}
				if got := recorded(c, f); !contains(got, cmd) {
					t.Fatalf("follower read after acknowledged %s sees %v", cmd, got)
				}
				break
			}
		}
	})
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Reads are counted by kind in raft.read.reads although the counting happens with atomics
// and reaches go-metrics in batches (once a second, and at shutdown): every successful read
// of each kind is in the metric, none twice.
func TestReadMetrics_CountEveryReadByKind(t *testing.T) {
	sink := metrics.NewInmemSink(time.Hour, time.Hour)
	conf := metrics.DefaultConfig("")
	conf.EnableHostname, conf.EnableHostnameLabel, conf.EnableRuntimeMetrics = false, false, false
	if _, err := metrics.NewGlobal(conf, sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = metrics.NewGlobal(metrics.DefaultConfig(""), &metrics.BlackholeSink{}) })
	counted := func(kind string) float64 {
		var sum float64
		for _, iv := range sink.Data() {
			iv.RLock()
			if v, ok := iv.Counters["raft.read.reads;kind="+kind]; ok {
				sum += v.Sum
			}
			iv.RUnlock()
		}
		return sum
	}
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		mustApply(t, c, "x")
		lr := c.Node(leader).Raft()
		fr := c.Node(others(c, leader)[0]).Raft()
		want := map[string]float64{}
		read := func(r *raft.Raft, lease bool) string {
			f := r.ReadIndexContext(context.Background(), raft.WithLease(lease))
			if err := f.Error(); err != nil {
				t.Fatalf("read: %v", err)
			}
			kind := raft.ReadKind(f)
			want[kind]++
			return kind
		}
		for i := 0; i < 20; i++ {
			read(lr, false)
			read(fr, false)
		}
		// A new leader takes no lease before HeartbeatTimeout; rounds answer until then.
		c.WaitFor(waitLong, "a lease read", func() bool { return read(lr, true) == "leader_lease" })
		for i := 0; i < 20; i++ {
			read(lr, true)
		}
		if want["leader_round"] < 20 || want["follower"] < 20 || want["leader_lease"] < 21 {
			t.Fatalf("read kinds %v, want at least 20 leader_round, 20 follower, 21 leader_lease", want)
		}
		reported := func() bool {
			for kind, n := range want {
				if counted(kind) != n {
					return false
				}
			}
			return true
		}
		c.WaitFor(waitLong, "the read counts reported", reported)
		// A second phase: what was reported before is not reported again.
		for i := 0; i < 10; i++ {
			read(lr, false)
			read(fr, false)
			read(lr, true)
		}
		c.WaitFor(waitLong, "the read counts of the second phase reported", reported)
		for _, kind := range []string{"leader_round", "leader_lease", "follower", "follower_lease"} {
			if got := counted(kind); got != want[kind] {
				t.Fatalf("raft.read.reads kind=%s: %v, want %v (reads %v)", kind, got, want[kind], want)
			}
		}
	})
}
