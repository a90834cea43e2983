package raft_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// The node's own disk hangs or fails: the log writer's failure policy, step-down, and status
// calls that never wait on the disk (docs/design.md, sections 3 and 11).

// TestDiskFailure_LeaderWithHungLogStoreStepsDown: a leader whose log store hangs longer than
// LogStoreTimeout steps down instead of leading over a dead disk (docs/design.md, sections 3
// and 11).
func TestDiskFailure_LeaderWithHungLogStoreStepsDown(t *testing.T) {
	const lease = time.Second
	opts := withHangingStores(raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		// A lease far longer than the store timeout: only the hung disk can end leadership
		// within it.
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = lease, lease, lease
		c.LogStoreTimeout = 50 * time.Millisecond
	}})
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(time.Minute)
		r := c.Node(leader).Raft()
		mustApply(t, c, "warm-up")
		hangingStoreOf(t, c, leader).Hang()
		// Cut the followers off too, so nothing commits without the leader's own disk and
		// the futures stay in flight until the step-down.
		c.Isolate(leader)
		start := time.Now()
		var futures []raft.ApplyFuture
		for i := 0; i < 3; i++ {
			futures = append(futures, r.Apply(fmt.Appendf(nil, "stuck-%d", i), 0))
		}
		for i, f := range futures {
			err := f.Error()
			if !errors.Is(err, raft.ErrLeadershipLost) || !errors.Is(err, raft.ErrLogStoreTimeout) {
				t.Fatalf("in-flight apply %d: %v, want ErrLeadershipLost and ErrLogStoreTimeout", i, err)
			}
		}
		if d := time.Since(start); d >= lease {
			t.Fatalf("step-down took %v, not shorter than the lease %v", d, lease)
		}
		if r.State() == raft.Leader {
			t.Fatal("the leader kept leading over a hung disk")
		}
		c.Heal()
		next := c.WaitLeader(time.Minute)
		if next == leader {
			t.Fatal("the node with the hung disk leads again")
		}
		g, err := c.Apply([]byte("after"), time.Minute)
		if err != nil {
			t.Fatalf("apply on the new leader: %v", err)
		}
		if got := c.Node(next).Raft().AppliedIndex(); got < g.Index() {
			t.Fatalf("new leader applied %d, want at least %d", got, g.Index())
		}
	})
}

// TestDiskFailure_StatusGettersNeverWaitOnDisk: the status getters of a node whose main loop
// is blocked in a hung store answer at once (docs/design.md, section 2).
func TestDiskFailure_StatusGettersNeverWaitOnDisk(t *testing.T) {
	raftest.Run(t, withHangingStores(raftest.Options{Nodes: 3}), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		warm := mustApply(t, c, "warm-up")
		c.WaitApplied(warm.Index(), waitLong)
		victim := others(c, leader)[0]
		store := hangingStoreOf(t, c, victim)
		store.Hang()
		f := mustApply(t, c, "while-hung") // commits through the other follower
		c.WaitFor(waitLong, "the follower's main loop to block in StoreLogs", func() bool { return store.hung.Load() > 0 })
		r := c.Node(victim).Raft()
		var (
			state        raft.RaftState
			stats        map[string]string
			last, commit uint64
			applied      uint64
			config       raft.ConfigurationFuture
			leaderAddr   raft.ServerAddress
		)
		if !within(time.Millisecond, func() {
			state, stats = r.State(), r.Stats()
			last, commit, applied = r.LastIndex(), r.CommitIndex(), r.AppliedIndex()
			config, leaderAddr = r.GetConfiguration(), r.Leader()
			_ = config.Error()
		}) {
			t.Fatal("status getters of a node whose disk hangs did not return within 1ms")
		}
		if state != raft.Follower || stats["state"] != "Follower" {
			t.Fatalf("state %v (stats %q), want follower", state, stats["state"])
		}
		if leaderAddr != c.Node(leader).Addr {
			t.Fatalf("leader %q, want %q", leaderAddr, c.Node(leader).Addr)
		}
		if last >= f.Index() || commit < warm.Index() || applied != warm.Index() {
			t.Fatalf("last %d commit %d applied %d; want last below %d and applied %d", last, commit, applied, f.Index(), warm.Index())
		}
		if err := config.Error(); err != nil || len(config.Configuration().Servers) != 3 {
			t.Fatalf("configuration %+v, %v", config.Configuration(), err)
		}
		store.Release()
		c.WaitApplied(f.Index(), waitLong)
		c.CheckSafety()
	})
}

// failingStore is an InmemStore whose StoreLogs fails once Fail was called.
type failingStore struct {
	*raft.InmemStore
	failing atomic.Bool
}

func (s *failingStore) StoreLogs(logs []*raft.Log) error {
	if s.failing.Load() {
		return errDiskGone
	}
	return s.InmemStore.StoreLogs(logs)
}

func (s *failingStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

var errDiskGone = errors.New("test: disk gone")

// TestDiskFailure_LeaderWriteErrorStopsTheNode: a leader whose disk starts failing stops the
// node (its on-disk log is in an unknown state), reports the cause, fails its waiting
// clients, and the others carry on (docs/design.md, sections 3 and 11).
func TestDiskFailure_LeaderWriteErrorStopsTheNode(t *testing.T) {
	stores := make(map[raft.ServerID]*failingStore)
	var mu sync.Mutex
	opts := raftest.Options{Nodes: 3, NewStores: func(id raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore) {
		s := &failingStore{InmemStore: raft.NewInmemStore()}
		mu.Lock()
		stores[id] = s
		mu.Unlock()
		return s, s.InmemStore, raft.NewInmemSnapshotStore()
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		mustApply(t, c, "before")
		mu.Lock()
		stores[c.Node(leader).ID].failing.Store(true)
		mu.Unlock()
		// The two followers may store the entry before the leader's own write fails: then it
		// is committed without the leader (a quorum needs no leader write) and must survive.
		// Either way the leader stops.
		doomedErr := r.Apply([]byte("doomed"), waitLong).Error()
		select {
		case <-r.Stopped():
		case <-time.After(waitLong):
			t.Fatal("the node kept running after a failed log write")
		}
		if cause := r.ShutdownCause(); !errors.Is(cause, errDiskGone) {
			t.Fatalf("shutdown cause %v, want the store's error", cause)
		}
		c.WaitFor(waitLong, "a new leader among the others", func() bool {
			l := c.Leader()
			return l >= 0 && l != leader
		})
		mustApply(t, c, "after")
		if doomedErr == nil {
			// The new leader has applied "after", so it has applied every entry before it.
			if cmds := c.Commands(c.WaitLeader(waitLong)); !slices.Contains(cmds, "doomed") {
				t.Fatalf("apply reported success, but the new leader lacks the entry: %q", cmds)
			}
		}
	})
}

// gatedWrites is an InmemStore whose next StoreLogs, once armed, blocks until the test
// releases it with the error that write returns (nil: the write goes through).
type gatedWrites struct {
	*raft.InmemStore
	mu      sync.Mutex
	armed   bool          // guarded by mu
	blocked chan struct{} // closed when a write reached the gate
	result  chan error    // buffer 1: the test's verdict
}

// arm makes the next StoreLogs block; release ends it with err.
func (s *gatedWrites) arm() (blocked <-chan struct{}, release func(err error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.blocked, s.result = true, make(chan struct{}), make(chan error, 1)
	result := s.result
	var once sync.Once
	return s.blocked, func(err error) { once.Do(func() { result <- err }) }
}

func (s *gatedWrites) StoreLogs(logs []*raft.Log) error {
	s.mu.Lock()
	var result chan error
	if s.armed {
		s.armed = false
		close(s.blocked)
		result = s.result
	}
	s.mu.Unlock()
	if result != nil {
		if err := <-result; err != nil {
			return err
		}
	}
	return s.InmemStore.StoreLogs(logs)
}

func (s *gatedWrites) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func newGatedWrites() *gatedWrites { return &gatedWrites{InmemStore: raft.NewInmemStore()} }

// withGatedWrites gives every node of a raftest cluster a gatedWrites log store.
func withGatedWrites(opts raftest.Options) raftest.Options {
	opts.NewStores = func(raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore) {
		s := newGatedWrites()
		return s, s.InmemStore, raft.NewInmemSnapshotStore()
	}
	return opts
}

// The leader's log writer has one failure policy on every path: a failed local write stops
// the node. Before the fix a write that failed while Restore waited for the writer only made
// the leader step down, and it went on with a log missing entries it had applied.
func TestLogWriter_FailedWriteWhileRestoreWaitsStopsTheNode(t *testing.T) {
	opts := withGatedWrites(raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		c.LogStoreTimeout = time.Minute
	}})
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 2)
		r := c.Node(leader).Raft()
		blocked, release := c.Node(leader).Logs.(*gatedWrites).arm()
		defer release(nil)
		// The followers commit it; the leader's own write of it hangs.
		f := r.Apply([]byte("hung-locally"), 0)
		<-blocked
		if err := f.Error(); err != nil {
			t.Fatalf("apply committed by the followers: %v", err)
		}
		restored := make(chan error, 1)
		go func() { restored <- r.Restore(meta, bytes.NewReader(data), 0) }()
		synctest.Wait() // the Restore waits for the hung write on the main loop
		release(errDiskGone)
		if err := <-restored; !errors.Is(err, raft.ErrRaftShutdown) || !errors.Is(err, errDiskGone) {
			t.Fatalf("restore over a failed write: %v, want ErrRaftShutdown wrapping the disk error", err)
		}
		select {
		case <-r.Stopped():
		case <-time.After(waitLong):
			t.Fatalf("the node kept running (%v) after its log write failed", r.State())
		}
		if cause := r.ShutdownCause(); !errors.Is(cause, errDiskGone) {
			t.Fatalf("shutdown cause %v, want the store's error", cause)
		}
	})
}
