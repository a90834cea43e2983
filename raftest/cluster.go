package raftest

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

// Options shape a test cluster. The zero value gives three bootstrapped voters with fast
// timeouts and a RecordingFSM on each node.
type Options struct {
	// Nodes is the number of nodes (default 3).
	Nodes int
	// Seed drives every random decision of the run: network faults and each node's election
	// timeouts. Zero takes RAFTEST_SEED from the environment, or else a fresh seed. The seed
	// is printed when the test fails.
	Seed int64
	// Config adjusts each node's configuration after the harness filled in fast defaults.
	Config func(c *raft.Config)
	// NewFSM builds a node's FSM, once per start; nil means NewRecordingFSM. The harness
	// wraps it to record what is applied for the safety checks.
	NewFSM func(id raft.ServerID) raft.FSM
	// NoBootstrap leaves the cluster unbootstrapped.
	NoBootstrap bool
	// InitialVoters, if set, bootstraps only the first InitialVoters nodes, with a
	// configuration of just them; the others start empty, for membership tests to add.
	InitialVoters int
	// NewStores builds the durable stores of a node, once per cluster (they survive
	// crashes); nil means in-memory stores.
	NewStores func(id raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore)
	// Prepare, if set, runs after the stores exist (and were bootstrapped) and before any
	// node starts, so a test can lay down a specific history in them.
	Prepare func(nodes []*Node)
	// LogLevel is the hclog level of node logs (default "info"; RAFTEST_LOG overrides).
	// Logs are kept in memory and printed only when the test fails.
	LogLevel string
}

// Cluster is a set of nodes over one InmemNetwork.
type Cluster struct {
	t     testing.TB
	opts  Options
	Seed  int64
	Net   *raft.InmemNetwork
	logs  *logBuffer
	rng   *rand.Rand
	mu    sync.Mutex // guards nodes' Raft/FSM fields against the monitor
	nodes []*Node

	checker *checker
	stopMon chan struct{}
	monDone chan struct{}
}

// Node is one member of a Cluster. Its stores survive Crash; its Raft does not.
type Node struct {
	ID     raft.ServerID
	Addr   raft.ServerAddress
	Logs   raft.LogStore
	Stable raft.StableStore
	Snaps  raft.SnapshotStore

	c    *Cluster
	raft *raft.Raft   // nil while crashed; guarded by c.mu
	fsm  *recorderFSM // the current incarnation's FSM; guarded by c.mu
}

// New starts a cluster and registers its shutdown, the final safety check and the seed
// report with t.Cleanup.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	seed := opts.Seed
	if seed == 0 {
		if s, err := strconv.ParseInt(os.Getenv("RAFTEST_SEED"), 10, 64); err == nil {
			seed = s
		} else {
			seed = rand.Int63() // the global source is seeded randomly; time is fake in a bubble
		}
	}
	c := &Cluster{
		t:       t,
		opts:    opts,
		Seed:    seed,
		Net:     raft.NewInmemNetwork(seed),
		logs:    newLogBuffer(4 << 20),
		rng:     rand.New(rand.NewSource(seed)),
		stopMon: make(chan struct{}),
		monDone: make(chan struct{}),
	}
	c.checker = newChecker()
	t.Cleanup(c.cleanup)
	var servers []raft.Server
	initial := opts.Nodes
	if opts.InitialVoters > 0 {
		initial = min(opts.InitialVoters, opts.Nodes)
	}
	for i := 0; i < opts.Nodes; i++ {
		id := raft.ServerID(fmt.Sprintf("n%d", i+1))
		n := &Node{c: c, ID: id, Addr: raft.ServerAddress(fmt.Sprintf("addr-%s", id))}
		if opts.NewStores != nil {
			n.Logs, n.Stable, n.Snaps = opts.NewStores(id)
		} else {
			store := raft.NewInmemStore()
			n.Logs, n.Stable, n.Snaps = store, store, raft.NewInmemSnapshotStore()
		}
		c.nodes = append(c.nodes, n)
		if i < initial {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: id, Address: n.Addr})
		}
	}
	if !opts.NoBootstrap {
		conf := raft.Configuration{Servers: servers}
		for _, n := range c.nodes[:initial] {
			if err := raft.BootstrapCluster(c.config(n), n.Logs, n.Stable, n.Snaps, nil, conf); err != nil {
				t.Fatalf("raftest: bootstrap %s: %v", n.ID, err)
			}
		}
	}
	if opts.Prepare != nil {
		opts.Prepare(c.nodes)
	}
	for i := range c.nodes {
		c.Start(i)
	}
	go c.monitor()
	return c
}

// Nodes returns the cluster's nodes.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Node returns node i (0-based).
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Raft returns the running node's Raft, or nil while it is crashed.
func (n *Node) Raft() *raft.Raft {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	return n.raft
}

// FSM returns the current (or last) incarnation's FSM, as built by Options.NewFSM.
func (n *Node) FSM() raft.FSM {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	return n.fsm.inner
}

// config builds the node's raft.Config.
func (c *Cluster) config(n *Node) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = n.ID
	conf.HeartbeatTimeout = 100 * time.Millisecond
	conf.ElectionTimeout = 100 * time.Millisecond
	conf.LeaderLeaseTimeout = 100 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotInterval = time.Hour
	conf.RandSeed = c.rng.Int63() + 1
	level := c.opts.LogLevel
	if env := os.Getenv("RAFTEST_LOG"); env != "" {
		level = env
	}
	if level == "" {
		level = "info"
	}
	conf.Logger = hclog.New(&hclog.LoggerOptions{
		Name: "raft", Level: hclog.LevelFromString(level), Output: c.logs, TimeFormat: "15:04:05.000000",
	})
	if c.opts.Config != nil {
		c.opts.Config(conf)
	}
	return conf
}

// Start starts node i from its stores (after New or Crash). It fails the test on error.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	n := c.nodes[i]
	trans, err := c.Net.NewTransport(n.Addr)
	if err != nil {
		c.t.Fatalf("raftest: transport for %s: %v", n.ID, err)
	}
	var inner raft.FSM
	if c.opts.NewFSM != nil {
		inner = c.opts.NewFSM(n.ID)
	} else {
		inner = NewRecordingFSM()
	}
	fsm := newRecorderFSM(inner, c.checker, n.ID)
	r, err := raft.NewRaft(c.config(n), wrapFSM(fsm), n.Logs, n.Stable, n.Snaps, trans)
	if err != nil {
		_ = trans.Close()
		c.t.Fatalf("raftest: starting %s: %v", n.ID, err)
	}
	c.mu.Lock()
	n.raft, n.fsm = r, fsm
	c.mu.Unlock()
}

// Crash stops node i abruptly: its goroutines exit and its transport closes, but its stores
// keep exactly what they held (in-memory stores lose nothing acknowledged, as a disk with
// fsync would).
func (c *Cluster) Crash(i int) {
	c.t.Helper()
	n := c.nodes[i]
	c.mu.Lock()
	r := n.raft
	n.raft = nil
	c.mu.Unlock()
	if r == nil {
		return
	}
	if err := r.Shutdown().Error(); err != nil {
		c.t.Fatalf("raftest: crashing %s: %v", n.ID, err)
	}
}

// Restart crashes node i and starts it again from its stores.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Crash(i)
	c.Start(i)
}

// Partition splits the network: only nodes in the same group can talk. Nodes in no group
// are isolated.
func (c *Cluster) Partition(groups ...[]int) {
	var addrGroups [][]raft.ServerAddress
	for _, g := range groups {
		var addrs []raft.ServerAddress
		for _, i := range g {
			addrs = append(addrs, c.nodes[i].Addr)
		}
		addrGroups = append(addrGroups, addrs)
	}
	c.Net.Partition(addrGroups...)
}

// Isolate cuts node i off from everyone.
func (c *Cluster) Isolate(i int) { c.Net.Isolate(c.nodes[i].Addr) }

// Heal reconnects every link (configured random faults stay).
func (c *Cluster) Heal() { c.Net.Heal() }

// Leader returns the index of the node that is leader in the highest term, or -1.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	best, bestTerm := -1, uint64(0)
	for i, n := range c.nodes {
		if n.raft == nil || n.raft.State() != raft.Leader {
			continue
		}
		if t := n.raft.CurrentTerm(); best == -1 || t > bestTerm {
			best, bestTerm = i, t
		}
	}
	return best
}

// WaitLeader waits until a running node in the highest term considers itself leader and a
// majority of the voters of its configuration agree on it, and returns its index. It fails
// the test after timeout.
func (c *Cluster) WaitLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	c.WaitFor(timeout, "a stable leader", func() bool {
		leader = c.Leader()
		if leader < 0 {
			return false
		}
		lr := c.nodes[leader].Raft()
		if lr == nil {
			return false
		}
		_, id := lr.LeaderWithID()
		voters := make(map[raft.ServerID]bool)
		for _, s := range lr.GetConfiguration().Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters[s.ID] = true
			}
		}
		agree := 0
		for _, n := range c.nodes {
			if r := n.Raft(); r != nil && voters[n.ID] {
				if _, lid := r.LeaderWithID(); lid == id && r.CurrentTerm() == lr.CurrentTerm() {
					agree++
				}
			}
		}
		return agree > len(voters)/2
	})
	return leader
}

// WaitFor polls cond until it is true, failing the test with what after timeout.
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	if !Eventually(timeout, cond) {
		c.t.Fatalf("raftest: timed out after %v waiting for %s", timeout, what)
	}
}

// Eventually polls cond every millisecond until it returns true or timeout passes.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// WaitApplied waits until every running node applied index.
func (c *Cluster) WaitApplied(index uint64, timeout time.Duration) {
	c.t.Helper()
	c.WaitFor(timeout, fmt.Sprintf("index %d applied on every running node", index), func() bool {
		for _, n := range c.nodes {
			if r := n.Raft(); r != nil && r.AppliedIndex() < index {
				return false
			}
		}
		return true
	})
}

// Apply submits cmd to the current leader and waits for the outcome, retrying on another
// leader while the error says nothing was applied (ErrNotLeader, ErrEnqueueTimeout). It
// returns the future of the last attempt, or an error.
func (c *Cluster) Apply(cmd []byte, timeout time.Duration) (raft.ApplyFuture, error) {
	deadline := time.Now().Add(timeout)
	for {
		leader := c.Leader()
		if leader >= 0 {
			if r := c.nodes[leader].Raft(); r != nil {
				f := r.Apply(cmd, time.Until(deadline))
				err := f.Error()
				if err == nil || !(errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout)) {
					return f, err
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("raftest: no leader accepted the command within %v", timeout)
		}
		Eventually(10*time.Millisecond, func() bool { return false })
	}
}

// CheckSafety checks the safety invariants now: at most one leader per term (as observed so
// far), log matching across the running nodes' stores, and identical applied entries at
// every index on every node incarnation. It fails the test on a violation.
func (c *Cluster) CheckSafety() {
	c.t.Helper()
	if err := c.checker.err(); err != nil {
		c.t.Fatalf("raftest: %v", err)
	}
	if err := c.checkLogMatching(); err != nil {
		c.t.Fatalf("raftest: %v", err)
	}
}

// SafetyErr returns the safety violations observed so far (two leaders in a term, different
// entries applied at one index), or nil. Unlike CheckSafety it reads no logs, so it is safe to
// call while the cluster runs.
func (c *Cluster) SafetyErr() error { return c.checker.err() }

// monitor samples every node's role and term to catch two leaders in one term.
func (c *Cluster) monitor() {
	defer close(c.monDone)
	tick := time.NewTicker(500 * time.Microsecond)
	defer tick.Stop()
	for {
		select {
		case <-c.stopMon:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		for _, n := range c.nodes {
			if n.raft == nil {
				continue
			}
			t1 := n.raft.CurrentTerm()
			isLeader := n.raft.State() == raft.Leader
			if isLeader && n.raft.CurrentTerm() == t1 {
				c.checker.observeLeader(t1, n.ID)
			}
		}
		c.mu.Unlock()
	}
}

// cleanup shuts every node down, runs the final safety check and prints the seed and the
// node logs when the test failed.
func (c *Cluster) cleanup() {
	close(c.stopMon)
	<-c.monDone
	for i := range c.nodes {
		c.Crash(i)
	}
	if !c.t.Failed() {
		if err := c.checker.err(); err != nil {
			c.t.Errorf("raftest: %v", err)
		}
	}
	if c.t.Failed() {
		c.t.Logf("raftest: seed %d (replay with RAFTEST_SEED=%d); node logs follow", c.Seed, c.Seed)
		c.t.Log(c.logs.String())
	}
}

// logBuffer keeps the newest log output in memory, up to a bound.
type logBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func newLogBuffer(limit int) *logBuffer { return &logBuffer{limit: limit} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.limit {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.limit/2:]...)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

var _ io.Writer = (*logBuffer)(nil)

// Run starts a cluster inside a testing/synctest bubble and calls f with it. In the bubble
// time is virtual: it advances only when every goroutine waits, so elections and timeouts
// cost no wall-clock time and a loaded machine cannot make a heartbeat late. The cluster is
// shut down and checked when f returns.
func Run(t *testing.T, opts Options, f func(t *testing.T, c *Cluster)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		f(t, New(t, opts))
	})
}
