package raftest

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest/memnet"
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
	// crashes) and again for each Wipe; nil means in-memory stores.
	NewStores func(id raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore)
	// OpenStores, if set instead of NewStores, opens a node's stores at every start, the way
	// a restarted process reopens its data directory (wal, files). The harness closes them
	// when the node crashes, once the crash fenced them off: each store that is an io.Closer,
	// once. The
	// first start reuses the stores opened to bootstrap the node. While a node is crashed its
	// Logs, Stable and Snaps fields hold the closed stores.
	OpenStores func(id raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore, error)
	// NewTransport, if set, builds a node's transport at every start instead of joining the
	// in-memory network. addr is empty at the node's first start; at a restart it is the
	// node's address, which the new transport's LocalAddr must report again, since peers know
	// the node by it (a TCP transport binds the same port again). The cluster is bootstrapped
	// with each node's LocalAddr. With a custom transport Net is nil, and Partition, Isolate
	// and Heal fail the test. logger writes where the node logs go (printed when the test
	// fails).
	NewTransport func(id raft.ServerID, addr raft.ServerAddress, logger hclog.Logger) (raft.Transport, error)
	// Prepare, if set, runs after the stores exist (and were bootstrapped) and before any
	// node starts, so a test can lay down a specific history in them.
	Prepare func(nodes []*Node)
	// LogLevel is the hclog level of node logs (default "info"; RAFTEST_LOG overrides).
	// Logs are kept in memory and printed only when the test fails.
	LogLevel string
}

// Cluster is a set of nodes over one memnet.Network, or over the transports of
// Options.NewTransport.
type Cluster struct {
	t    testing.TB
	opts Options
	Seed int64
	// Net is the in-memory network the nodes talk over; nil with Options.NewTransport.
	Net   *memnet.Network
	logs  *logBuffer
	rng   *rand.Rand
	mu    sync.Mutex // guards nodes' Raft/FSM fields against the monitor
	nodes []*Node

	checker *checker
	// abandoned are the Rafts of crashed incarnations, shut down at cleanup in case they did
	// not stop on their own. Test goroutine only.
	abandoned []*raft.Raft
}

// Node is one member of a Cluster. Its stores survive Crash; its Raft does not.
type Node struct {
	ID     raft.ServerID
	Addr   raft.ServerAddress
	Logs   raft.LogStore
	Stable raft.StableStore
	Snaps  raft.SnapshotStore

	c         *Cluster
	raft      *raft.Raft   // nil while crashed; guarded by c.mu
	fsm       *recorderFSM // the current incarnation's FSM; guarded by c.mu
	inc       *Incarnation // the current incarnation; nil before the first start; guarded by c.mu
	disk      DiskFaults   // kept across incarnations; guarded by c.mu
	fsmFaults FSMFaults    // kept across incarnations; guarded by c.mu

	// Used by the test goroutine only (New, Start, Crash, cleanup).
	trans      raft.Transport // built by New for the first Start (NewTransport); nil after
	storesOpen bool           // OpenStores opened the stores and they were not closed yet
}

// New starts a cluster and registers its shutdown, the final safety check and the seed
// report with t.Cleanup.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.NewStores != nil && opts.OpenStores != nil {
		t.Fatal("raftest: set NewStores or OpenStores, not both")
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
		t:    t,
		opts: opts,
		Seed: seed,
		logs: newLogBuffer(4 << 20),
		rng:  rand.New(rand.NewSource(seed)),
	}
	if opts.NewTransport == nil {
		c.Net = memnet.New(seed)
	}
	c.checker = newChecker()
	// A hung test never reaches the cleanup that prints the seed: the watchdog prints it
	// shortly before the test binary's timeout, until the cluster's cleanup is over.
	t.Cleanup(watch(t, seed))
	t.Cleanup(c.cleanup)
	var servers []raft.Server
	initial := opts.Nodes
	if opts.InitialVoters > 0 {
		initial = min(opts.InitialVoters, opts.Nodes)
	}
	for i := 0; i < opts.Nodes; i++ {
		n := c.newNode(raft.ServerID(fmt.Sprintf("n%d", i+1)))
		if i < initial {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.ID, Address: n.Addr})
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
	return c
}

// newNode adds a node with its stores and, with a custom transport, the transport of its
// first start, which gives the node its address.
func (c *Cluster) newNode(id raft.ServerID) *Node {
	c.t.Helper()
	n := &Node{c: c, ID: id}
	c.nodes = append(c.nodes, n) // first, so cleanup releases whatever fails below
	switch {
	case c.opts.NewStores != nil:
		n.Logs, n.Stable, n.Snaps = c.opts.NewStores(id)
	case c.opts.OpenStores != nil:
		if err := c.openStores(n); err != nil {
			c.t.Fatalf("raftest: %v", err)
		}
	default:
		store := raft.NewInmemStore()
		n.Logs, n.Stable, n.Snaps = store, store, raft.NewInmemSnapshotStore()
	}
	if c.Net != nil {
		n.Addr = raft.ServerAddress(fmt.Sprintf("addr-%s", id))
		return n
	}
	trans, err := c.newTransport(n)
	if err != nil {
		c.t.Fatalf("raftest: %v", err)
	}
	n.trans = trans
	return n
}

// Nodes returns the cluster's nodes.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Node returns node i (0-based).
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Raft returns the running node's Raft, or nil while it is crashed (also when it crashed
// itself at an armed crash point and was not restarted yet).
func (n *Node) Raft() *raft.Raft {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	return n.liveLocked()
}

// liveLocked returns the node's Raft if its incarnation runs. Called with c.mu held.
func (n *Node) liveLocked() *raft.Raft {
	if n.raft == nil || n.inc.Crashed() {
		return nil
	}
	return n.raft
}

// Running reports whether the node runs: started and not crashed since.
func (n *Node) Running() bool { return n.Raft() != nil }

// Incarnation returns the node's current (or last) incarnation, nil before its first start.
func (n *Node) Incarnation() *Incarnation {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	return n.inc
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
	conf.Logger = c.logger("raft")
	if c.opts.Config != nil {
		c.opts.Config(conf)
	}
	return conf
}

// Logf writes a line into the node logs (printed when the test fails), stamped as they are,
// so that a test's own steps (a partition, a heal, a restart) appear in time order among what
// the nodes logged. It writes whatever Options.LogLevel says.
func (c *Cluster) Logf(format string, args ...any) {
	line := fmt.Sprintf("%s [TEST]  %s\n", time.Now().Format("15:04:05.000000"), fmt.Sprintf(format, args...))
	_, _ = c.logs.Write([]byte(line))
}

// logger returns a logger named name writing into the cluster's log buffer at the level of
// Options.LogLevel or RAFTEST_LOG.
func (c *Cluster) logger(name string) hclog.Logger {
	level := c.opts.LogLevel
	if env := os.Getenv("RAFTEST_LOG"); env != "" {
		level = env
	}
	if level == "" {
		level = "info"
	}
	return hclog.New(&hclog.LoggerOptions{
		Name: name, Level: hclog.LevelFromString(level), Output: c.logs, TimeFormat: "15:04:05.000000",
	})
}

// Start starts node i from its stores (after New or Crash), reopening them first with
// Options.OpenStores and building its transport with Options.NewTransport when those are
// set. It fails the test on error.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	n := c.nodes[i]
	c.mu.Lock()
	running, started := n.liveLocked() != nil, n.raft != nil
	c.mu.Unlock()
	if running {
		c.t.Fatalf("raftest: starting %s, which is running", n.ID)
	}
	if started {
		c.Crash(i) // it crashed itself at an armed crash point: finish the crash
	}
	trans := n.trans
	n.trans = nil
	if trans == nil {
		var err error
		if trans, err = c.newTransport(n); err != nil {
			c.t.Fatalf("raftest: %v", err)
		}
	}
	if c.opts.OpenStores != nil && !n.storesOpen {
		if err := c.openStores(n); err != nil {
			_ = trans.Close()
			c.t.Fatalf("raftest: %v", err)
		}
	}
	var inner raft.FSM
	if c.opts.NewFSM != nil {
		inner = c.opts.NewFSM(n.ID)
	} else {
		inner = NewRecordingFSM()
	}
	fsm := newRecorderFSM(inner, c.checker, n.ID)
	c.mu.Lock()
	disk, fsmFaults := n.disk, n.fsmFaults
	c.mu.Unlock()
	id := n.ID
	inc := NewIncarnation(c.rng.Int63(), func() { c.Logf("%s is down (crashed)", id) })
	inc.SetDiskFaults(disk)
	inc.SetFSMFaults(fsmFaults)
	conf := c.config(n)
	r, err := raft.NewRaft(conf, inc.FSM(wrapFSM(fsm)), inc.LogStore(n.Logs), inc.StableStore(n.Stable),
		inc.SnapshotStore(n.Snaps), inc.Transport(trans))
	if err != nil {
		inc.Crash()
		_ = trans.Close()
		c.closeStores(n)
		c.t.Fatalf("raftest: starting %s: %v", n.ID, err)
	}
	// Leadership is taken from the event fired inside the role change, with the term it won:
	// reading role and term separately could pair a leader with the higher term it is about
	// to step down for. The filter runs for every event; it keeps none.
	r.RegisterObserver(raft.NewObserver(make(chan raft.Observation), false, func(o *raft.Observation) bool {
		if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID == n.ID && !inc.Crashed() {
			c.checker.observeLeader(lo.Term, n.ID)
		}
		return false
	}))
	c.mu.Lock()
	n.raft, n.fsm, n.inc = r, fsm, inc
	c.mu.Unlock()
	c.Logf("%s started", n.ID)
}

// newTransport builds a transport for n: on the in-memory network, or from
// Options.NewTransport, which must keep the address the node already has.
func (c *Cluster) newTransport(n *Node) (raft.Transport, error) {
	if c.Net != nil {
		trans, err := c.Net.NewTransport(n.Addr)
		if err != nil {
			return nil, fmt.Errorf("transport for %s: %w", n.ID, err)
		}
		return trans, nil
	}
	trans, err := c.opts.NewTransport(n.ID, n.Addr, c.logger("transport").With("server", string(n.ID)))
	if err != nil {
		return nil, fmt.Errorf("transport for %s: %w", n.ID, err)
	}
	if addr := trans.LocalAddr(); n.Addr != "" && addr != n.Addr {
		_ = trans.Close()
		return nil, fmt.Errorf("transport for %s has address %s, but peers know the node as %s", n.ID, addr, n.Addr)
	}
	n.Addr = trans.LocalAddr()
	return trans, nil
}

// openStores opens n's stores with Options.OpenStores.
func (c *Cluster) openStores(n *Node) error {
	logs, stable, snaps, err := c.opts.OpenStores(n.ID)
	if err != nil {
		return fmt.Errorf("opening stores of %s: %w", n.ID, err)
	}
	n.Logs, n.Stable, n.Snaps, n.storesOpen = logs, stable, snaps, true
	return nil
}

// closeStores closes the stores OpenStores opened for n, each io.Closer once. A failure
// fails the test but lets the caller go on releasing the rest of the cluster.
func (c *Cluster) closeStores(n *Node) {
	c.t.Helper()
	if !n.storesOpen {
		return
	}
	n.storesOpen = false
	var closed []io.Closer
	for _, s := range []any{n.Logs, n.Stable, n.Snaps} {
		cl, ok := s.(io.Closer)
		if !ok || slices.Contains(closed, cl) {
			continue
		}
		closed = append(closed, cl)
		if err := cl.Close(); err != nil {
			c.t.Errorf("raftest: closing stores of %s: %v", n.ID, err)
		}
	}
}

// Crash kills node i's incarnation at once, wherever its goroutines are, and does not wait
// for anything in flight: see Incarnation for exactly what its stores keep (a write in
// progress keeps a seeded prefix or nothing, everything finished stays) and why nothing of
// the old incarnation can act afterwards. Stores from Options.OpenStores are then closed,
// as a dying process leaves them. Crashing a crashed node does nothing.
func (c *Cluster) Crash(i int) {
	c.t.Helper()
	n := c.nodes[i]
	c.mu.Lock()
	r, inc := n.raft, n.inc
	n.raft = nil
	c.mu.Unlock()
	if r == nil {
		return
	}
	inc.Crash()
	c.abandoned = append(c.abandoned, r)
	c.closeStores(n)
}

// CrashAt arms a crash of node i inside its next operation p after letting after such
// operations through; see Incarnation.CrashAt. The node then crashes itself: Node.Running
// turns false and Start restarts it. The arming does not outlive the incarnation; p zero
// disarms.
func (c *Cluster) CrashAt(i int, p CrashPoint, after int) {
	c.t.Helper()
	if inc := c.nodes[i].Incarnation(); inc != nil {
		inc.CrashAt(p, after)
	}
}

// SetDiskFaults gives node i's disk latency and stalls, now and in later incarnations.
func (c *Cluster) SetDiskFaults(i int, f DiskFaults) {
	c.keepFault(i, func(n *Node) { n.disk = f }, func(inc *Incarnation) { inc.SetDiskFaults(f) })
}

// SetFSMFaults gives node i's FSM latency, now and in later incarnations.
func (c *Cluster) SetFSMFaults(i int, f FSMFaults) {
	c.keepFault(i, func(n *Node) { n.fsmFaults = f }, func(inc *Incarnation) { inc.SetFSMFaults(f) })
}

// keepFault records a fault in node i, where later incarnations pick it up (under c.mu), and
// applies it to the running incarnation, if any.
func (c *Cluster) keepFault(i int, keep func(*Node), apply func(*Incarnation)) {
	n := c.nodes[i]
	c.mu.Lock()
	keep(n)
	inc := n.inc
	c.mu.Unlock()
	if inc != nil {
		apply(inc)
	}
}

// Wipe crashes node i (if it runs) and gives it empty stores, the way a node comes back whose
// disk was lost or replaced, or whose data directory was deleted: same ID, same address, no
// term, no vote, no log, no snapshot. Start restarts it. The new stores come from
// Options.NewStores, or are fresh in-memory ones; with Options.OpenStores the test must empty
// the directory itself while the node is down, so Wipe fails the test there.
func (c *Cluster) Wipe(i int) {
	c.t.Helper()
	if c.opts.OpenStores != nil {
		c.t.Fatalf("raftest: Wipe of %s: the stores come from Options.OpenStores; empty its directory instead", c.nodes[i].ID)
	}
	c.Crash(i)
	n := c.nodes[i]
	if c.opts.NewStores != nil {
		n.Logs, n.Stable, n.Snaps = c.opts.NewStores(n.ID)
		return
	}
	store := raft.NewInmemStore()
	n.Logs, n.Stable, n.Snaps = store, store, raft.NewInmemSnapshotStore()
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
	c.t.Helper()
	c.needNet("Partition")
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
func (c *Cluster) Isolate(i int) {
	c.t.Helper()
	c.needNet("Isolate")
	c.Net.Isolate(c.nodes[i].Addr)
}

// Heal reconnects every link (configured random faults stay).
func (c *Cluster) Heal() {
	c.t.Helper()
	c.needNet("Heal")
	c.Net.Heal()
}

// needNet fails the test when the cluster does not run over the in-memory network, the only
// one that can inject faults.
func (c *Cluster) needNet(what string) {
	c.t.Helper()
	if c.Net == nil {
		c.t.Fatalf("raftest: %s needs the in-memory network; this cluster uses Options.NewTransport", what)
	}
}

// Leader returns the index of the node that is leader in the highest term, or -1.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	best, bestTerm := -1, uint64(0)
	for i, n := range c.nodes {
		r := n.liveLocked()
		if r == nil || r.State() != raft.Leader {
			continue
		}
		if t := r.CurrentTerm(); best == -1 || t > bestTerm {
			best, bestTerm = i, t
		}
	}
	return best
}

// WaitLeader waits until a running node in the highest term considers itself leader and a
// majority of the voters of its configuration agree on it, and returns its index. It fails
// the test after timeout.
//
// The leader it returns may still step down at once: a leader cut off for most of its lease
// just before a Heal is found again (its followers still follow it), but it steps down by
// check-quorum if no heartbeat gets through before the lease lapses, and a write handed to it
// fails with raft.ErrLeadershipLost. A liveness check after a heal should retry with a new
// command rather than expect the first write to commit.
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

// cleanup crashes every node, shuts down what is left of every incarnation, runs the final
// safety check and prints the seed and the node logs when the test failed.
func (c *Cluster) cleanup() {
	for i, n := range c.nodes {
		c.Crash(i)
		// A node that never started holds an open transport or stores.
		if n.trans != nil {
			_ = n.trans.Close()
			n.trans = nil
		}
		c.closeStores(n)
	}
	// Crashed incarnations stop on their own once they notice their fenced stores and
	// transport; Shutdown makes the idle ones (a follower that hears nothing and cannot
	// campaign) exit too, so a synctest bubble ends. It cannot reach a disk or a peer.
	for _, r := range c.abandoned {
		_ = r.Shutdown().Error()
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
