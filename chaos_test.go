package raft_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

var (
	chaosSeed  = flag.Int64("seed", 0, "replay one randomized run (0: fresh seeds)")
	chaosSteps = flag.Int("chaos.steps", 40, "fault steps per randomized run")
	chaosRuns  = flag.Int("chaos.runs", 3, "randomized runs per test")
)

// ackLog records what clients were told about each command.
type ackLog struct {
	mu    sync.Mutex
	acked map[string]bool // command -> acknowledged (false: outcome unknown)
}

func (a *ackLog) record(cmd string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acked[cmd] = ok
}

// chaosClient applies unique commands until stop closes, retrying a command only on errors
// that guarantee it was not applied.
func chaosClient(c *raftest.Cluster, id int, acks *ackLog, stop <-chan struct{}) {
	for seq := 0; ; seq++ {
		// Pace the load: in a synctest bubble the cluster does any amount of work in zero
		// virtual time, so an unpaced client would never let time (and faults) move on.
		select {
		case <-stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		cmd := fmt.Sprintf("c%d-%d", id, seq)
		for {
			leader := c.Leader()
			if leader < 0 {
				if !raftest.Eventually(5*time.Millisecond, func() bool { return c.Leader() >= 0 }) {
					select {
					case <-stop:
						return
					default:
						continue
					}
				}
				continue
			}
			r := c.Node(leader).Raft()
			if r == nil {
				continue
			}
			err := r.Apply([]byte(cmd), 300*time.Millisecond).Error()
			if err == nil {
				acks.record(cmd, true)
				break
			}
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout) {
				// Not applied: the same command may be retried.
				select {
				case <-stop:
					return
				default:
				}
				continue
			}
			acks.record(cmd, false)
			break
		}
	}
}

// chaosStep applies one random fault.
func chaosStep(c *raftest.Cluster, rng *rand.Rand, crashed map[int]bool) string {
	n := len(c.Nodes())
	switch rng.Intn(7) {
	case 0:
		perm := rng.Perm(n)
		k := 1 + rng.Intn(n-1)
		var a, b []int
		a = append(a, perm[:k]...)
		b = append(b, perm[k:]...)
		c.Partition(a, b)
		return fmt.Sprintf("partition %v | %v", a, b)
	case 1:
		c.Heal()
		return "heal"
	case 2:
		i := rng.Intn(n)
		if !crashed[i] && len(crashed) < (n-1)/2 {
			c.Crash(i)
			crashed[i] = true
			return fmt.Sprintf("crash %d", i)
		}
		return "noop"
	case 3:
		for i := range crashed {
			c.Start(i)
			delete(crashed, i)
			return fmt.Sprintf("restart %d", i)
		}
		return "noop"
	case 4:
		c.Net.SetDefaultFaults(raft.LinkFaults{DropRate: 0.1 * rng.Float64(), DuplicateRate: 0.05, MaxDelay: time.Duration(rng.Intn(10)) * time.Millisecond})
		return "random faults"
	case 5:
		c.Net.ClearFaults()
		return "clear faults"
	default:
		if leader := c.Leader(); leader >= 0 {
			c.Isolate(leader)
			return fmt.Sprintf("isolate leader %d", leader)
		}
		return "noop"
	}
}

func TestRandomized_SafetyUnderPartitionsDropsAndRestarts(t *testing.T) {
	runRandomized(t, false)
}

// TestRandomized_SafetyUnderMembershipChanges mixes voter removals and additions into the
// fault steps and checks the same invariants; the healed phase adds every node back.
func TestRandomized_SafetyUnderMembershipChanges(t *testing.T) {
	runRandomized(t, true)
}

// forEachSeed runs f as a subtest once per randomized run: -chaos.runs fresh seeds, or the
// one given with -seed. A failing run prints how to replay it.
func forEachSeed(t *testing.T, f func(t *testing.T, seed int64)) {
	runs := *chaosRuns
	if *chaosSeed != 0 {
		runs = 1
	}
	for run := 0; run < runs; run++ {
		seed := *chaosSeed
		if seed == 0 {
			seed = rand.Int63()
		}
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("replay with: go test -race -run '%s' -seed=%d .", t.Name(), seed)
				}
			}()
			f(t, seed)
		})
	}
}

func runRandomized(t *testing.T, membership bool) {
	forEachSeed(t, func(t *testing.T, seed int64) {
		opts := raftest.Options{Nodes: 5, Seed: seed}
		if seed%2 == 0 {
			// Every other run snapshots and compacts aggressively, so lagging and
			// restarted nodes catch up through InstallSnapshot under faults too.
			opts.Config = func(conf *raft.Config) {
				conf.SnapshotInterval = 50 * time.Millisecond
				conf.SnapshotThreshold = 64
				conf.TrailingLogs = 16
			}
		}
		raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
			runChaos(t, c, seed, membership)
		})
	})
}

func runChaos(t *testing.T, c *raftest.Cluster, seed int64, membership bool) {
	rng := rand.New(rand.NewSource(seed))
	acks := &ackLog{acked: make(map[string]bool)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chaosClient(c, i, acks, stop)
		}()
	}
	crashed := make(map[int]bool)
	c.WaitLeader(waitLong)
	for step := 0; step < *chaosSteps; step++ {
		var what string
		if membership && rng.Intn(3) == 0 {
			what = chaosMembershipStep(c, rng)
		} else {
			what = chaosStep(c, rng, crashed)
		}
		t.Logf("step %d: %s", step, what)
		// Let the cluster run a while under this fault.
		raftest.Eventually(time.Duration(50+rng.Intn(300))*time.Millisecond, func() bool { return false })
		if err := c.SafetyErr(); err != nil {
			t.Fatalf("after step %d (%s): %v", step, what, err)
		}
	}
	// Liveness phase: heal everything; the cluster must converge.
	close(stop)
	c.Heal()
	c.Net.ClearFaults()
	for i := range crashed {
		c.Start(i)
	}
	wg.Wait()
	c.WaitLeader(waitLong)
	if membership {
		readdAll(t, c)
	}
	f := mustApply(t, c, "final")
	c.WaitApplied(f.Index(), waitLong)
	c.CheckSafety()
	checkAcked(t, c, acks)
}

// checkAcked checks that every acknowledged command is in every FSM exactly once and no
// command is in any FSM twice.
func checkAcked(t *testing.T, c *raftest.Cluster, acks *ackLog) {
	t.Helper()
	acks.mu.Lock()
	defer acks.mu.Unlock()
	nAcked := 0
	for i := range c.Nodes() {
		counts := make(map[string]int)
		for _, cmd := range recorded(c, i) {
			counts[cmd]++
			if counts[cmd] > 1 {
				t.Fatalf("node %d applied %q twice", i, cmd)
			}
		}
		for cmd, ok := range acks.acked {
			if ok && counts[cmd] != 1 {
				t.Fatalf("node %d holds acknowledged command %q %d times, want exactly once", i, cmd, counts[cmd])
			}
		}
	}
	for _, ok := range acks.acked {
		if ok {
			nAcked++
		}
	}
	if nAcked == 0 {
		t.Fatal("no command was acknowledged during the run: the test checked nothing")
	}
	t.Logf("%d commands acknowledged, %d with unknown outcome", nAcked, len(acks.acked)-nAcked)
}

// chaosMembershipStep removes a random voter (keeping at least three) or adds back a random
// node that is not a voter, through the current leader, and waits for the outcome.
func chaosMembershipStep(c *raftest.Cluster, rng *rand.Rand) string {
	leader := c.Leader()
	if leader < 0 {
		return "noop"
	}
	r := c.Node(leader).Raft()
	if r == nil {
		return "noop"
	}
	cfg := r.GetConfiguration().Configuration()
	voters := 0
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	n := c.Node(rng.Intn(len(c.Nodes())))
	var err error
	var what string
	if s, ok := serverOf(cfg, n.ID); ok && s.Suffrage == raft.Voter {
		if voters <= 3 {
			return "noop"
		}
		what = fmt.Sprintf("remove %s", n.ID)
		err = r.RemoveServer(n.ID, 0, 300*time.Millisecond).Error()
	} else {
		what = fmt.Sprintf("add voter %s", n.ID)
		err = r.AddVoter(n.ID, n.Addr, 0, 300*time.Millisecond).Error()
	}
	return fmt.Sprintf("%s through %d: %v", what, leader, err)
}

func serverOf(cfg raft.Configuration, id raft.ServerID) (raft.Server, bool) {
	for _, s := range cfg.Servers {
		if s.ID == id {
			return s, true
		}
	}
	return raft.Server{}, false
}

// readdAll makes every node a voter again, retrying through whichever node leads.
func readdAll(t *testing.T, c *raftest.Cluster) {
	t.Helper()
	c.WaitFor(waitLong, "every node a voter again", func() bool {
		leader := c.Leader()
		if leader < 0 || c.Node(leader).Raft() == nil {
			return false
		}
		r := c.Node(leader).Raft()
		done := true
		for _, n := range c.Nodes() {
			if s, ok := serverOf(r.GetConfiguration().Configuration(), n.ID); ok && s.Suffrage == raft.Voter {
				continue
			}
			done = false
			if err := r.AddVoter(n.ID, n.Addr, 0, time.Second).Error(); err != nil {
				t.Logf("re-adding %s: %v", n.ID, err)
				return false
			}
		}
		return done
	})
}
