package raft_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
	"github.com/raftkit/raft/raftest/memnet"
)

var (
	chaosSeed  = flag.Int64("seed", 0, "replay one randomized run (0: fresh seeds)")
	chaosSteps = flag.Int("chaos.steps", 40, "fault steps per randomized run")
	chaosRuns  = flag.Int("chaos.runs", 3, "randomized runs per test")
)

// chaosCrashPoints are the crash points randomized runs arm: all of them. (While an open bug
// made one fail, it was armed only with RAFTKIT_KNOWN_BUGS=1, so CI stayed green until the fix
// was on main: FSM.Restore and InstallSnapshot waited for issue 10 bug 3.)
func chaosCrashPoints() []raftest.CrashPoint { return raftest.CrashPoints() }

// chaosCommand is a command of client id: its name, then '|' and padding that makes entries
// from a few bytes to big ones (up to 1 MiB for the big client), drawn from rng.
func chaosCommand(rng *rand.Rand, id, seq int, big bool) (name string, data []byte) {
	name = fmt.Sprintf("c%d-%d", id, seq)
	maxBytes := 256.0
	if big {
		maxBytes = 1 << 20
	}
	// Log-uniform sizes: as many tiny entries as large ones per order of magnitude.
	pad := int(math.Exp(rng.Float64() * math.Log(maxBytes)))
	data = make([]byte, len(name)+1+pad)
	copy(data, name)
	data[len(name)] = '|'
	for i := len(name) + 1; i < len(data); i++ {
		data[i] = byte('a' + (i+seq)%26)
	}
	return name, data
}

// commandName is the name part of a chaosCommand's data.
func commandName(data []byte) string {
	if i := bytes.IndexByte(data, '|'); i >= 0 {
		return string(data[:i])
	}
	return string(data)
}

// namesFSM is a RecordingFSM that records only the names of chaos commands, so that big
// entries do not make every snapshot big too.
type namesFSM struct{ *raftest.RecordingFSM }

func (f namesFSM) Apply(l *raft.Log) any {
	c := *l
	c.Data = []byte(commandName(l.Data))
	return f.RecordingFSM.Apply(&c)
}

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
// that guarantee it was not applied. The big client sends fewer, bigger entries.
func chaosClient(c *raftest.Cluster, id int, seed int64, big bool, acks *ackLog, stop <-chan struct{}) {
	rng := rand.New(rand.NewSource(seed))
	pace := 5 * time.Millisecond
	if big {
		pace = 200 * time.Millisecond
	}
	for seq := 0; ; seq++ {
		// Pace the load: in a synctest bubble the cluster does any amount of work in zero
		// virtual time, so an unpaced client would never let time (and faults) move on.
		select {
		case <-stop:
			return
		case <-time.After(pace):
		}
		cmd, data := chaosCommand(rng, id, seq, big)
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
			node := c.Node(leader)
			r, inc := node.Raft(), node.Incarnation()
			if r == nil {
				continue
			}
			err := r.Apply(data, 300*time.Millisecond).Error()
			if err == nil && inc.Crashed() {
				// The answer may have come from a node that crashed already: a dead
				// process answers nobody, so the outcome is unknown.
				acks.record(cmd, false)
				break
			}
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

// canLoseOne reports whether one more node may go down (crashed, or armed to crash) while a
// majority stays up.
func canLoseOne(c *raftest.Cluster) bool {
	lost := 0
	for _, n := range c.Nodes() {
		if !n.Running() || n.Incarnation().Armed() != 0 {
			lost++
		}
	}
	return lost < (len(c.Nodes())-1)/2
}

// runningNode draws a running node, or -1.
func runningNode(c *raftest.Cluster, rng *rand.Rand) int {
	var up []int
	for i, n := range c.Nodes() {
		if n.Running() {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		return -1
	}
	return up[rng.Intn(len(up))]
}

// restartDown starts every node that is down (crashed by a step or at an armed crash point).
func restartDown(c *raftest.Cluster) {
	for i, n := range c.Nodes() {
		if !n.Running() {
			c.Start(i)
		}
	}
}

// chaosStep applies one random fault: network faults, abrupt crashes (at once, or armed
// inside a chosen operation), restarts, slow or stalling disks and slow FSMs.
func chaosStep(c *raftest.Cluster, rng *rand.Rand) string {
	n := len(c.Nodes())
	switch rng.Intn(11) {
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
		if i := runningNode(c, rng); i >= 0 && canLoseOne(c) {
			c.Crash(i)
			return fmt.Sprintf("crash %d", i)
		}
		return "noop"
	case 3:
		for i, node := range c.Nodes() {
			if !node.Running() {
				c.Start(i)
				return fmt.Sprintf("restart %d", i)
			}
		}
		return "noop"
	case 4:
		c.Net.SetDefaultFaults(memnet.LinkFaults{DropRate: 0.1 * rng.Float64(), DuplicateRate: 0.05, MaxDelay: time.Duration(rng.Intn(10)) * time.Millisecond})
		return "random faults"
	case 5:
		c.Net.ClearFaults()
		return "clear faults"
	case 6:
		if leader := c.Leader(); leader >= 0 {
			c.Isolate(leader)
			return fmt.Sprintf("isolate leader %d", leader)
		}
		return "noop"
	case 7:
		points := chaosCrashPoints()
		i := runningNode(c, rng)
		if rng.Intn(2) == 0 {
			i = c.Leader()
		}
		if i < 0 || len(points) == 0 || !canLoseOne(c) {
			return "noop"
		}
		p, after := points[rng.Intn(len(points))], rng.Intn(4)
		c.CrashAt(i, p, after)
		return fmt.Sprintf("arm crash of %d inside %v after %d", i, p, after)
	case 8:
		i := rng.Intn(n)
		// Compaction and the log replacement of an install or Restore are slow too: the
		// main loop must never wait for a compaction (issue 10; it froze the bubble).
		f := raftest.DiskFaults{MaxLatency: time.Duration(rng.Intn(20)) * time.Millisecond, SlowDeleteRange: true}
		if rng.Intn(2) == 0 {
			f.StallRate, f.Stall = 0.02, time.Duration(50+rng.Intn(450))*time.Millisecond
		}
		c.SetDiskFaults(i, f)
		return fmt.Sprintf("slow disk on %d: %+v", i, f)
	case 9:
		i := rng.Intn(n)
		f := raftest.FSMFaults{MaxLatency: time.Duration(rng.Intn(5000)) * time.Microsecond}
		c.SetFSMFaults(i, f)
		return fmt.Sprintf("slow FSM on %d: %+v", i, f)
	default:
		for i := range c.Nodes() {
			c.SetDiskFaults(i, raftest.DiskFaults{})
			c.SetFSMFaults(i, raftest.FSMFaults{})
		}
		return "fast disks and FSMs"
	}
}

// clearSlowness removes every disk and FSM fault.
func clearSlowness(c *raftest.Cluster) {
	for i := range c.Nodes() {
		c.SetDiskFaults(i, raftest.DiskFaults{})
		c.SetFSMFaults(i, raftest.FSMFaults{})
		c.CrashAt(i, 0, 0)
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
		opts := raftest.Options{Nodes: 5, Seed: seed, NewFSM: func(raft.ServerID) raft.FSM {
			return namesFSM{raftest.NewRecordingFSM()}
		}}
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
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chaosClient(c, i, seed+int64(i), i == 4, acks, stop)
		}()
	}
	c.WaitLeader(waitLong)
	for step := 0; step < *chaosSteps; step++ {
		var what string
		if membership && rng.Intn(3) == 0 {
			what = chaosMembershipStep(c, rng)
		} else {
			what = chaosStep(c, rng)
		}
		t.Logf("step %d: %s", step, what)
		c.Logf("step %d: %s", step, what)
		// Let the cluster run a while under this fault.
		raftest.Eventually(time.Duration(50+rng.Intn(300))*time.Millisecond, func() bool { return false })
		if err := c.SafetyErr(); err != nil {
			t.Fatalf("after step %d (%s): %v", step, what, err)
		}
	}
	close(stop)
	converge(t, c, &wg, membership)
	c.CheckSafety()
	checkAcked(t, c, acks)
}

// TestRandomized_ConvergesWhenTheLeaderLosesItsLeaseAfterTheHeal is the liveness phase's own
// hard case (seen once in 220 seeds: 156563991280828191): the leader is cut off for a little
// less than its lease and the network heals. WaitLeader finds it again, since its followers
// still follow it, but its heartbeats sent while it was cut off fail only after the network
// timeout, its lease lapses before one gets through, and check-quorum steps it down: a write
// handed to it then fails with ErrLeadershipLost, its outcome unknown. That is the library
// working as designed; the liveness phase must still converge, with another write.
func TestRandomized_ConvergesWhenTheLeaderLosesItsLeaseAfterTheHeal(t *testing.T) {
	steppedDown := 0
	runs := 0
	for _, cut := range []time.Duration{92, 95, 98} {
		forEachSeed(t, func(t *testing.T, seed int64) {
			raftest.Run(t, raftest.Options{Nodes: 5, Seed: seed}, func(t *testing.T, c *raftest.Cluster) {
				leader := c.WaitLeader(waitLong)
				mustApply(t, c, "before")
				term := c.Node(leader).Raft().CurrentTerm()
				c.Isolate(leader)
				c.Logf("isolated the leader %d for %v", leader, cut*time.Millisecond)
				raftest.Eventually(cut*time.Millisecond, func() bool { return false })
				var wg sync.WaitGroup
				converge(t, c, &wg, false)
				runs++
				if c.Node(c.Leader()).Raft().CurrentTerm() > term {
					steppedDown++
				}
			})
		})
	}
	t.Logf("the leader stepped down after the heal in %d of %d runs", steppedDown, runs)
	if runs > 0 && steppedDown == 0 {
		t.Fatalf("no run had the leader step down after the heal: the test no longer exercises its case")
	}
}

// converge is the liveness phase of the randomized suites: it heals the network, clears every
// fault, disarms the crash points and restarts the nodes that are down, waits for the clients
// (told to stop) in wg, and then requires a leader and a write committed and applied on every
// node within waitLong. With membership it first makes every node a voter again.
func converge(t *testing.T, c *raftest.Cluster, wg *sync.WaitGroup, membership bool) {
	t.Helper()
	c.Logf("liveness phase: heal, clear faults and slowness, restart the nodes that are down")
	c.Heal()
	c.Net.ClearFaults()
	clearSlowness(c)
	restartDown(c)
	wg.Wait()
	c.Logf("liveness phase: clients stopped; waiting for a stable leader")
	c.Logf("liveness phase: node %d leads", c.WaitLeader(waitLong))
	if membership {
		readdAll(t, c)
		c.Logf("liveness phase: every node is a voter again")
	}
	f := commitSome(t, c, "final")
	c.Logf("liveness phase: a final command committed at index %d", f.Index())
	c.WaitApplied(f.Index(), waitLong)
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
