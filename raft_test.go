// Tests of the Raft type as a user meets it: construction and its checks, leadership
// notifications, Barrier and VerifyLeader, Stats keys, BatchingFSM, calls after Shutdown and
// the goroutines Shutdown leaves (none).

package raft_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Tests of the public API: validation, bootstrap, leader-only calls, shutdown, restart,
// leadership notifications, Barrier, BatchingFSM, VerifyLeader and Stats.

func TestValidateConfig_RejectsInvalidCombinations(t *testing.T) {
	checkInvalidConfigs(t, []invalidConfig{
		{"empty LocalID", func(c *raft.Config) { c.LocalID = "" }, "LocalID"},
		{"lease above heartbeat", func(c *raft.Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout }, "LeaderLeaseTimeout"},
		{"tiny heartbeat timeout", func(c *raft.Config) { c.HeartbeatTimeout = time.Millisecond }, "HeartbeatTimeout"},
		{"zero heartbeat timeout", func(c *raft.Config) { c.HeartbeatTimeout = 0 }, "HeartbeatTimeout"},
		{"tiny election timeout", func(c *raft.Config) { c.ElectionTimeout = time.Millisecond }, "ElectionTimeout"},
		{"election below heartbeat", func(c *raft.Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 }, "ElectionTimeout"},
		{"zero commit timeout", func(c *raft.Config) { c.CommitTimeout = 0 }, "CommitTimeout"},
		{"tiny lease", func(c *raft.Config) { c.LeaderLeaseTimeout = time.Millisecond }, "LeaderLeaseTimeout"},
		{"zero log store timeout", func(c *raft.Config) { c.LogStoreTimeout = 0 }, "LogStoreTimeout"},
		{"negative log store timeout", func(c *raft.Config) { c.LogStoreTimeout = -time.Second }, "LogStoreTimeout"},
		{"MaxAppendEntries zero", func(c *raft.Config) { c.MaxAppendEntries = 0 }, "MaxAppendEntries"},
		{"MaxAppendEntries negative", func(c *raft.Config) { c.MaxAppendEntries = -1 }, "MaxAppendEntries"},
		{"MaxAppendEntries above 1024", func(c *raft.Config) { c.MaxAppendEntries = 1025 }, "MaxAppendEntries"},
		{"tiny snapshot interval", func(c *raft.Config) { c.SnapshotInterval = time.Millisecond }, "SnapshotInterval"},
		{"zero snapshot threshold", func(c *raft.Config) { c.SnapshotThreshold = 0 }, "SnapshotThreshold"},
	})
	if err := raft.ValidateConfig(nil); !errors.Is(err, raft.ErrInvalidConfig) {
		t.Fatalf("nil config: %v", err)
	}
	valid := raft.DefaultConfig()
	valid.LocalID = "n1"
	if err := raft.ValidateConfig(valid); err != nil {
		t.Fatalf("DefaultConfig with a LocalID: %v", err)
	}
	valid.MaxAppendEntries = 1024
	if err := raft.ValidateConfig(valid); err != nil {
		t.Fatalf("MaxAppendEntries at its limit: %v", err)
	}
}

func TestNewRaft_RequiresEveryDependency(t *testing.T) {
	net := raft.NewInmemNetwork()
	trans, err := net.NewTransport("addr-n1")
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	fsm, store, snaps := raftest.NewRecordingFSM(), raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	cases := map[string]func() (*raft.Raft, error){
		"nil fsm":            func() (*raft.Raft, error) { return raft.NewRaft(fastConfig("n1"), nil, store, store, snaps, trans) },
		"nil log store":      func() (*raft.Raft, error) { return raft.NewRaft(fastConfig("n1"), fsm, nil, store, snaps, trans) },
		"nil stable store":   func() (*raft.Raft, error) { return raft.NewRaft(fastConfig("n1"), fsm, store, nil, snaps, trans) },
		"nil snapshot store": func() (*raft.Raft, error) { return raft.NewRaft(fastConfig("n1"), fsm, store, store, nil, trans) },
		"nil transport":      func() (*raft.Raft, error) { return raft.NewRaft(fastConfig("n1"), fsm, store, store, snaps, nil) },
		"nil config":         func() (*raft.Raft, error) { return raft.NewRaft(nil, fsm, store, store, snaps, trans) },
		"invalid config":     func() (*raft.Raft, error) { return raft.NewRaft(fastConfig(""), fsm, store, store, snaps, trans) },
	}
	for name, newRaft := range cases {
		r, err := newRaft()
		if r != nil || !errors.Is(err, raft.ErrInvalidConfig) {
			t.Errorf("%s: got %v, %v; want no node and ErrInvalidConfig", name, r, err)
		}
	}
}

// threeVoters is a valid configuration of n1..n3.
func threeVoters() raft.Configuration {
	var c raft.Configuration
	for i := 1; i <= 3; i++ {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprintf("n%d", i)),
			Address: raft.ServerAddress(fmt.Sprintf("addr-n%d", i))})
	}
	return c
}

// startNode starts an unbootstrapped node n1 on fresh in-memory stores inside the caller's
// bubble; it is shut down when the test ends.
func startNode(t *testing.T, conf *raft.Config) (*raft.Raft, *raft.InmemStore) {
	t.Helper()
	net := raft.NewInmemNetwork()
	trans, err := net.NewTransport("addr-n1")
	if err != nil {
		t.Fatal(err)
	}
	store := raft.NewInmemStore()
	conf.Logger = testLogger(t)
	r, err := raft.NewRaft(conf, raftest.NewRecordingFSM(), store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	return r, store
}

func TestBootstrapCluster_SecondBootstrapFails(t *testing.T) {
	store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	if err := raft.BootstrapCluster(fastConfig("n1"), store, store, snaps, nil, threeVoters()); err != nil {
		t.Fatalf("first bootstrap: %v", err)
	}
	if err := raft.BootstrapCluster(fastConfig("n1"), store, store, snaps, nil, threeVoters()); !errors.Is(err, raft.ErrCantBootstrap) {
		t.Fatalf("second bootstrap: %v, want ErrCantBootstrap", err)
	}
	synctest.Test(t, func(t *testing.T) {
		r, store := startNode(t, fastConfig("n1"))
		if err := r.BootstrapCluster(threeVoters()).Error(); err != nil {
			t.Fatalf("first bootstrap of a running node: %v", err)
		}
		if err := r.BootstrapCluster(threeVoters()).Error(); !errors.Is(err, raft.ErrCantBootstrap) {
			t.Fatalf("second bootstrap of a running node: %v, want ErrCantBootstrap", err)
		}
		if err := raft.BootstrapCluster(fastConfig("n1"), store, store, raft.NewInmemSnapshotStore(), nil, threeVoters()); !errors.Is(err, raft.ErrCantBootstrap) {
			t.Fatalf("package bootstrap of a running node's stores: %v, want ErrCantBootstrap", err)
		}
		if got := r.GetConfiguration().Configuration(); len(got.Servers) != 3 {
			t.Fatalf("configuration after bootstrap: %+v", got)
		}
	})
}

func TestBootstrapCluster_InvalidConfigurationFails(t *testing.T) {
	voter := func(id, addr string) raft.Server {
		return raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)}
	}
	cases := map[string]raft.Configuration{
		"empty":              {},
		"duplicate ID":       {Servers: []raft.Server{voter("n1", "a1"), voter("n1", "a2")}},
		"duplicate address":  {Servers: []raft.Server{voter("n1", "a1"), voter("n2", "a1")}},
		"empty ID":           {Servers: []raft.Server{voter("", "a1")}},
		"empty address":      {Servers: []raft.Server{voter("n1", "")}},
		"no voter":           {Servers: []raft.Server{{Suffrage: raft.Nonvoter, ID: "n1", Address: "a1"}}},
		"unknown suffrage":   {Servers: []raft.Server{voter("n1", "a1"), {Suffrage: 7, ID: "n2", Address: "a2"}}},
		"voterless of three": {Servers: []raft.Server{{Suffrage: raft.Nonvoter, ID: "n1", Address: "a1"}, {Suffrage: raft.Nonvoter, ID: "n2", Address: "a2"}}},
	}
	for name, configuration := range cases {
		store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(fastConfig("n1"), store, store, snaps, nil, configuration); !errors.Is(err, raft.ErrInvalidConfiguration) {
			t.Errorf("package bootstrap with %s configuration: %v, want ErrInvalidConfiguration", name, err)
		}
		if last, _ := store.LastIndex(); last != 0 {
			t.Errorf("failed bootstrap with %s configuration wrote the log up to %d", name, last)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		r, _ := startNode(t, fastConfig("n1"))
		for name, configuration := range cases {
			if err := r.BootstrapCluster(configuration).Error(); !errors.Is(err, raft.ErrInvalidConfiguration) {
				t.Errorf("bootstrap of a running node with %s configuration: %v, want ErrInvalidConfiguration", name, err)
			}
		}
		// Nothing was written: a valid bootstrap still works.
		if err := r.BootstrapCluster(threeVoters()).Error(); err != nil {
			t.Fatalf("valid bootstrap after invalid ones: %v", err)
		}
	})
}

func TestRaft_FollowerRefusesLeaderOnlyCallsWithLeaderHint(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		want := c.Node(leader)
		c.WaitFor(waitLong, "every node to know the leader", func() bool {
			for _, n := range c.Nodes() {
				if _, id := n.Raft().LeaderWithID(); id != want.ID {
					return false
				}
			}
			return true
		})
		for _, i := range others(c, leader) {
			r := c.Node(i).Raft()
			calls := map[string]func() raft.Future{
				"Apply":        func() raft.Future { return r.Apply([]byte("x"), time.Hour) },
				"ApplyLog":     func() raft.Future { return r.ApplyLog(raft.Log{Data: []byte("x")}, 0) },
				"ApplyContext": func() raft.Future { return r.ApplyContext(context.Background(), []byte("x")) },
				"Barrier":      func() raft.Future { return r.Barrier(0) },
				"VerifyLeader": func() raft.Future { return r.VerifyLeader() },
			}
			for name, call := range calls {
				var err error
				start := time.Now()
				if !within(time.Second, func() { err = call().Error() }) || time.Since(start) != 0 {
					t.Fatalf("%s on follower %d did not fail at once", name, i)
				}
				var nl *raft.NotLeaderError
				if !errors.Is(err, raft.ErrNotLeader) || !errors.As(err, &nl) {
					t.Fatalf("%s on follower %d: %v, want a *NotLeaderError", name, i, err)
				}
				if nl.LeaderID != want.ID || nl.LeaderAddress != want.Addr {
					t.Fatalf("%s on follower %d names leader %s at %s, want %s at %s", name, i, nl.LeaderID, nl.LeaderAddress, want.ID, want.Addr)
				}
			}
		}
		for i := range c.Nodes() {
			if n := len(recorded(c, i)); n != 0 {
				t.Fatalf("node %d applied %d commands refused by followers", i, n)
			}
		}
	})
}

// callsAfterShutdown are the calls that must fail with ErrRaftShutdown on a stopped node.
func callsAfterShutdown(r *raft.Raft) map[string]func() error {
	return map[string]func() error{
		"Apply":            func() error { return r.Apply([]byte("late"), time.Hour).Error() },
		"Apply no timeout": func() error { return r.Apply([]byte("late"), 0).Error() },
		"ApplyLog":         func() error { return r.ApplyLog(raft.Log{Data: []byte("late")}, 0).Error() },
		"ApplyContext":     func() error { return r.ApplyContext(context.Background(), []byte("late")).Error() },
		"Barrier":          func() error { return r.Barrier(0).Error() },
		"VerifyLeader":     func() error { return r.VerifyLeader().Error() },
		"Snapshot":         func() error { return r.Snapshot().Error() },
		"Snapshot.Open": func() error {
			_, _, err := r.Snapshot().Open()
			return err
		},
		"BootstrapCluster": func() error { return r.BootstrapCluster(threeVoters()).Error() },
	}
}

func TestRaft_ShutdownFailsEveryCall(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		mustApply(t, c, "before")
		c.Isolate(leader) // nothing commits: requests stay pending until the shutdown
		pending := []raft.Future{r.Apply([]byte("pending"), 0), r.Barrier(0), r.VerifyLeader()}
		if err := r.Shutdown().Error(); err != nil { // waits for every goroutine of the node
			t.Fatal(err)
		}
		for i, f := range pending {
			if err := f.Error(); !errors.Is(err, raft.ErrRaftShutdown) && !errors.Is(err, raft.ErrLeadershipLost) {
				t.Fatalf("pending request %d: %v, want ErrRaftShutdown", i, err)
			}
		}
		for name, call := range callsAfterShutdown(r) {
			var err error
			if !within(time.Second, func() { err = call() }) {
				t.Fatalf("%s after shutdown did not return", name)
			}
			if !errors.Is(err, raft.ErrRaftShutdown) {
				t.Fatalf("%s after shutdown: %v, want ErrRaftShutdown", name, err)
			}
		}
		if !within(time.Second, func() {
			_ = r.GetConfiguration().Error()
			_, _, _, _ = r.Stats(), r.LastIndex(), r.AppliedIndex(), r.CommitIndex()
		}) {
			t.Fatal("status calls after shutdown did not return")
		}
		if r.State() != raft.Shutdown || r.ShutdownCause() != nil {
			t.Fatalf("state %v, cause %v; want shutdown without a cause", r.State(), r.ShutdownCause())
		}
		if err := r.Shutdown().Error(); err != nil {
			t.Fatalf("second shutdown: %v", err)
		}
		// The synctest bubble fails the test if any goroutine of the node is left behind.
	})
}

func TestRaft_ShutdownLeavesNoGoroutines(t *testing.T) {
	// Outside a bubble, in real time: count goroutines before and after one node's life.
	before := runtime.NumGoroutine()
	conf := fastConfig("n1")
	conf.Logger = testLogger(t)
	net := raft.NewInmemNetwork()
	trans, err := net.NewTransport("addr-n1")
	if err != nil {
		t.Fatal(err)
	}
	store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	single := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "addr-n1"}}}
	if err := raft.BootstrapCluster(conf, store, store, snaps, nil, single); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, raftest.NewRecordingFSM(), store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	if !raftest.Eventually(10*time.Second, func() bool { return r.State() == raft.Leader }) {
		t.Fatal("single node did not elect itself")
	}
	for i := 0; i < 10; i++ {
		if err := r.Apply(fmt.Appendf(nil, "cmd-%d", i), 10*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	_, rc, err := r.Snapshot().Open()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	var now int
	if !raftest.Eventually(10*time.Second, func() bool { now = runtime.NumGoroutine(); return now <= before }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before the node, %d after its shutdown:\n%s", before, now, buf[:runtime.Stack(buf, true)])
	}
}

func TestRaft_RestartFromStoresGivesIdenticalFSMs(t *testing.T) {
	opts := raftest.Options{Nodes: 3, Config: func(c *raft.Config) { c.TrailingLogs = 5 }}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		var last uint64
		for i := 0; i < 60; i++ {
			last = mustApply(t, c, fmt.Sprintf("cmd-%d", i)).Index()
			if i == 30 {
				// One node restarts from snapshot plus log, the others from the log alone.
				if err := c.Node(leader).Raft().Snapshot().Error(); err != nil {
					t.Fatalf("snapshot: %v", err)
				}
			}
		}
		c.WaitApplied(last, waitLong)
		want := recorded(c, leader)
		if len(want) != 60 {
			t.Fatalf("leader applied %d commands, want 60", len(want))
		}
		for i := range c.Nodes() {
			c.Crash(i)
		}
		for i := range c.Nodes() {
			c.Start(i)
		}
		c.WaitLeader(waitLong)
		c.WaitApplied(last, waitLong)
		for i := range c.Nodes() {
			if got := recorded(c, i); !slices.Equal(got, want) {
				t.Fatalf("node %d after restart applied %v, want %v", i, got, want)
			}
		}
		if first, _ := c.Node(leader).Logs.FirstIndex(); first <= 1 {
			t.Fatalf("the snapshotting node's log starts at %d: nothing was compacted, so the snapshot path went untested", first)
		}
		c.CheckSafety()
	})
}

// leadershipChans hands every node a NotifyCh, created inside the bubble when the harness
// builds the node's Config.
type leadershipChans struct {
	mu sync.Mutex
	ch map[raft.ServerID]chan bool
}

func (l *leadershipChans) config(c *raft.Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ch == nil {
		l.ch = make(map[raft.ServerID]chan bool)
	}
	if l.ch[c.LocalID] == nil {
		l.ch[c.LocalID] = make(chan bool, 16) // more than the changes one test makes
	}
	c.NotifyCh = l.ch[c.LocalID]
}

func (l *leadershipChans) of(id raft.ServerID) <-chan bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ch[id]
}

// awaitLeadership reads ch until it delivers want, failing after waitLong.
func awaitLeadership(t *testing.T, what string, ch <-chan bool, want bool) {
	t.Helper()
	timer := time.NewTimer(waitLong)
	defer timer.Stop()
	for {
		select {
		case v := <-ch:
			if v == want {
				return
			}
		case <-timer.C:
			t.Fatalf("%s did not report leadership %v", what, want)
		}
	}
}

func TestRaft_LeaderChAndNotifyChReportLeadership(t *testing.T) {
	notify := &leadershipChans{}
	raftest.Run(t, raftest.Options{Nodes: 3, Config: notify.config}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		n := c.Node(leader)
		r := n.Raft()
		awaitLeadership(t, "LeaderCh", r.LeaderCh(), true)
		awaitLeadership(t, "NotifyCh", notify.of(n.ID), true)
		c.Isolate(leader)
		awaitLeadership(t, "LeaderCh", r.LeaderCh(), false)
		awaitLeadership(t, "NotifyCh", notify.of(n.ID), false)
		if r.State() == raft.Leader {
			t.Fatal("LeaderCh reported the loss while the node still leads")
		}
		c.Heal()
		next := c.WaitLeader(waitLong)
		awaitLeadership(t, "the next leader's LeaderCh", c.Node(next).Raft().LeaderCh(), true)
		awaitLeadership(t, "the next leader's NotifyCh", notify.of(c.Node(next).ID), true)
		for i, node := range c.Nodes() {
			if i == next {
				continue
			}
			select {
			case v := <-node.Raft().LeaderCh():
				if v {
					t.Fatalf("node %d's LeaderCh says leader; node %d leads", i, next)
				}
			default:
			}
		}
	})
}

func TestRaft_BarrierResolvesAfterPriorApplies(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		var futures []raft.ApplyFuture
		for i := 0; i < 200; i++ {
			futures = append(futures, r.Apply(fmt.Appendf(nil, "cmd-%d", i), 0))
		}
		barrier := r.Barrier(waitLong)
		if err := barrier.Error(); err != nil {
			t.Fatalf("barrier: %v", err)
		}
		// Every earlier apply is already resolved: reading them takes no (virtual) time.
		start := time.Now()
		for i, f := range futures {
			if err := f.Error(); err != nil {
				t.Fatalf("apply %d: %v", i, err)
			}
		}
		if time.Since(start) != 0 {
			t.Fatalf("applies resolved %v after the barrier", time.Since(start))
		}
		if got := len(recorded(c, leader)); got != 200 {
			t.Fatalf("leader's FSM holds %d commands when the barrier resolved, want 200", got)
		}
		if bi := barrier.(raft.IndexFuture).Index(); bi <= futures[199].Index() || r.AppliedIndex() < bi {
			t.Fatalf("barrier at %d (applied %d), last apply at %d", bi, r.AppliedIndex(), futures[199].Index())
		}
	})
}

// batchingFSM records commands like RecordingFSM, through ApplyBatch, and notes the largest
// batch. Each response names its entry.
type batchingFSM struct {
	*raftest.RecordingFSM
	mu       sync.Mutex
	maxBatch int // guarded by mu
}

func (f *batchingFSM) ApplyBatch(logs []*raft.Log) []any {
	f.mu.Lock()
	f.maxBatch = max(f.maxBatch, len(logs))
	f.mu.Unlock()
	out := make([]any, len(logs))
	for i, l := range logs {
		f.RecordingFSM.Apply(l)
		out[i] = fmt.Sprintf("%d:%s", l.Index, l.Data)
	}
	return out
}

func (f *batchingFSM) largestBatch() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxBatch
}

func TestRaft_BatchingFSMGetsBatchesAndPerEntryResponses(t *testing.T) {
	opts := raftest.Options{Nodes: 3, NewFSM: func(raft.ServerID) raft.FSM {
		return &batchingFSM{RecordingFSM: raftest.NewRecordingFSM()}
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		const workers, perWorker = 32, 20
		errs := make(chan error, workers)
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perWorker; i++ {
					cmd := fmt.Sprintf("w%d-%d", w, i)
					f := r.Apply([]byte(cmd), waitLong)
					if err := f.Error(); err != nil {
						errs <- err
						return
					}
					if want := fmt.Sprintf("%d:%s", f.Index(), cmd); f.Response() != want {
						errs <- fmt.Errorf("response %v for %s, want %s", f.Response(), cmd, want)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		fsm := c.Node(leader).FSM().(*batchingFSM)
		if got := len(fsm.Entries()); got != workers*perWorker {
			t.Fatalf("leader applied %d commands, want %d", got, workers*perWorker)
		}
		if b := fsm.largestBatch(); b < 2 {
			t.Fatalf("largest ApplyBatch call held %d entries; concurrent load should batch", b)
		}
	})
}

func TestRaft_VerifyLeaderSucceedsOnHealthyLeader(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		for i := 0; i < 5; i++ {
			if err := r.VerifyLeader().Error(); err != nil {
				t.Fatalf("verify %d on a healthy leader: %v", i, err)
			}
		}
		// Concurrent verifies share heartbeats and all succeed.
		futures := make([]raft.Future, 10)
		for i := range futures {
			futures[i] = r.VerifyLeader()
		}
		for i, f := range futures {
			if err := f.Error(); err != nil {
				t.Fatalf("concurrent verify %d: %v", i, err)
			}
		}
	})
}

func TestRaft_StatsHasDocumentedKeys(t *testing.T) {
	documented := []string{"state", "term", "last_log_index", "last_log_term", "commit_index", "applied_index",
		"fsm_pending", "last_snapshot_index", "last_snapshot_term", "leader_id", "leader_addr", "latest_configuration",
		"latest_configuration_index", "num_peers", "protocol_version", "protocol_version_min", "protocol_version_max",
		"snapshot_version_min", "snapshot_version_max", "election_rounds", "last_contact", "catching_up"}
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		f := mustApply(t, c, "x")
		c.WaitApplied(f.Index(), waitLong)
		r := c.Node(leader).Raft()
		stats := r.Stats()
		keys := slices.Sorted(maps.Keys(stats))
		if want := slices.Sorted(slices.Values(documented)); !slices.Equal(keys, want) {
			t.Fatalf("Stats keys %v, documented %v", keys, want)
		}
		u := func(v uint64) string { return strconv.FormatUint(v, 10) }
		// Values in hashicorp/raft's formats where it has the same key.
		want := map[string]string{
			"state": "Leader", "term": u(r.CurrentTerm()), "leader_id": string(c.Node(leader).ID),
			"leader_addr": string(c.Node(leader).Addr), "num_peers": "2", "last_log_index": u(f.Index()),
			"commit_index": u(f.Index()), "applied_index": u(f.Index()), "last_log_term": u(r.CurrentTerm()),
			"protocol_version": strconv.Itoa(raft.ProtocolVersion), "latest_configuration_index": "1",
			"protocol_version_min": strconv.Itoa(raft.ProtocolVersionMin),
			"protocol_version_max": strconv.Itoa(raft.ProtocolVersionMax),
			"snapshot_version_min": "1", "snapshot_version_max": strconv.Itoa(raft.SnapshotVersion),
			"last_contact": "0", "fsm_pending": "0",
		}
		for k, v := range want {
			if stats[k] != v {
				t.Errorf("Stats()[%q] = %q, want %q", k, stats[k], v)
			}
		}
		if got := stats["latest_configuration"]; !strings.HasPrefix(got, "[{Suffrage:voter ID:n1 Address:") {
			t.Errorf("latest_configuration %q, want the servers printed with %%+v", got)
		}
		follower := c.Node((leader + 1) % 3).Raft()
		fs := follower.Stats()
		if fs["state"] != "Follower" {
			t.Errorf("follower state %q, want Follower", fs["state"])
		}
		if d, err := time.ParseDuration(fs["last_contact"]); err != nil || d < 0 || d > waitLong {
			t.Errorf("follower last_contact %q (%v), want a short Go duration", fs["last_contact"], err)
		}
	})
}

// shortBatchFSM breaks the BatchingFSM contract on the command "break": it returns no
// responses for that batch.
type shortBatchFSM struct{ *raftest.RecordingFSM }

func (f shortBatchFSM) ApplyBatch(logs []*raft.Log) []any {
	for _, l := range logs {
		if string(l.Data) == "break" {
			return nil
		}
	}
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.RecordingFSM.Apply(l)
	}
	return out
}

func TestRaft_BatchingFSMBreakingItsContractStopsTheNodeWithACause(t *testing.T) {
	opts := raftest.Options{Nodes: 1, NewFSM: func(raft.ServerID) raft.FSM {
		return shortBatchFSM{raftest.NewRecordingFSM()}
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		r := c.Node(c.WaitLeader(waitLong)).Raft()
		if err := r.Apply([]byte("fine"), waitLong).Error(); err != nil {
			t.Fatalf("apply before the broken batch: %v", err)
		}
		if err := r.Apply([]byte("break"), waitLong).Error(); !errors.Is(err, raft.ErrFSMContract) {
			t.Fatalf("apply of the batch the FSM broke on: %v, want ErrFSMContract", err)
		}
		select {
		case <-r.Stopped():
		case <-time.After(waitLong):
			t.Fatal("node still running after its FSM broke the contract")
		}
		if err := r.ShutdownCause(); !errors.Is(err, raft.ErrFSMContract) {
			t.Fatalf("shutdown cause %v, want ErrFSMContract", err)
		}
	})
}
