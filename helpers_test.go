package raft_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Helpers shared by the failure-mode, API and load tests.

// testSeed returns RAFTEST_SEED if set, else a fresh seed, and prints it if the test fails.
func testSeed(t *testing.T) int64 {
	t.Helper()
	seed, err := strconv.ParseInt(os.Getenv("RAFTEST_SEED"), 10, 64)
	if err != nil {
		seed = rand.Int63()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (replay with RAFTEST_SEED=%d)", seed, seed)
		}
	})
	return seed
}

// logBuffer collects a node's logs and prints them only if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// testLogger returns a logger whose output is printed when t fails.
func testLogger(t *testing.T) hclog.Logger {
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			b.mu.Lock()
			defer b.mu.Unlock()
			t.Log(b.buf.String())
		}
	})
	return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Debug, Output: b})
}

// fastConfig is a valid configuration with the timeouts the raftest harness uses.
func fastConfig(id raft.ServerID) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = id
	conf.HeartbeatTimeout = 100 * time.Millisecond
	conf.ElectionTimeout = 100 * time.Millisecond
	conf.LeaderLeaseTimeout = 100 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotInterval = time.Hour
	return conf
}

// hangingStore is an InmemStore whose StoreLogs blocks, once Hang was called, until Release.
type hangingStore struct {
	*raft.InmemStore
	hanging atomic.Bool
	hung    atomic.Int32  // calls that blocked so far
	release chan struct{} // closed by Release
	once    sync.Once
}

func newHangingStore() *hangingStore {
	return &hangingStore{InmemStore: raft.NewInmemStore(), release: make(chan struct{})}
}

// StoreLogs implements raft.LogStore.
func (s *hangingStore) StoreLogs(logs []*raft.Log) error {
	if s.hanging.Load() {
		s.hung.Add(1)
		<-s.release
	}
	return s.InmemStore.StoreLogs(logs)
}

// StoreLog implements raft.LogStore.
func (s *hangingStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// Hang makes every later StoreLogs block until Release.
func (s *hangingStore) Hang() { s.hanging.Store(true) }

// Release lets blocked and later writes through.
func (s *hangingStore) Release() {
	s.hanging.Store(false)
	s.once.Do(func() { close(s.release) })
}

// withHangingStores gives every node of a raftest cluster a hangingStore.
func withHangingStores(opts raftest.Options) raftest.Options {
	opts.NewStores = func(raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore) {
		s := newHangingStore()
		return s, s.InmemStore, raft.NewInmemSnapshotStore()
	}
	return opts
}

// hangingStoreOf returns node i's hangingStore. Each call registers a cleanup (releasing is
// idempotent) that releases every node's store, so no goroutine of the cluster stays blocked
// at shutdown; it runs before the cluster's own cleanup, which was registered earlier.
func hangingStoreOf(t *testing.T, c *raftest.Cluster, i int) *hangingStore {
	t.Helper()
	t.Cleanup(func() {
		for _, n := range c.Nodes() {
			n.Logs.(*hangingStore).Release()
		}
	})
	return c.Node(i).Logs.(*hangingStore)
}

// within runs f on its own goroutine and reports whether it returned within d (of virtual
// time inside a synctest bubble).
func within(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}

// waitLong bounds the waits of cluster tests: generous, since most run in virtual time.
const waitLong = 10 * time.Second

// recorded returns the commands node i applied, as strings.
func recorded(c *raftest.Cluster, i int) []string {
	var out []string
	for _, e := range c.Node(i).FSM().(interface{ Entries() []raftest.Entry }).Entries() {
		out = append(out, commandName(e.Data))
	}
	return out
}

// countOf counts how often cmd was applied on node i.
func countOf(c *raftest.Cluster, i int, cmd string) int {
	n := 0
	for _, s := range recorded(c, i) {
		if s == cmd {
			n++
		}
	}
	return n
}

// mustApply applies cmd through the cluster and fails the test on error.
func mustApply(t *testing.T, c *raftest.Cluster, cmd string) raft.ApplyFuture {
	t.Helper()
	f, err := c.Apply([]byte(cmd), waitLong)
	if err != nil {
		t.Fatalf("apply %q: %v", cmd, err)
	}
	return f
}

// commitSome writes until one write commits within waitLong and returns its future: prefix-1,
// then prefix-2 and so on. A write that failed with ErrLeadershipLost may or may not commit
// later, so the next attempt is a different command, never the same one again. It is the
// liveness check after a heal: a leader found just after healing may still step down (see
// raftest.Cluster.WaitLeader), and the claim is that the cluster commits writes again, not
// that the first leader it shows keeps its lease.
func commitSome(t *testing.T, c *raftest.Cluster, prefix string) raft.ApplyFuture {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for attempt := 1; ; attempt++ {
		cmd := fmt.Sprintf("%s-%d", prefix, attempt)
		f, err := c.Apply([]byte(cmd), time.Until(deadline))
		if err == nil {
			return f
		}
		if !errors.Is(err, raft.ErrLeadershipLost) || time.Now().After(deadline) {
			t.Fatalf("apply %q (attempt %d): %v", cmd, attempt, err)
		}
		c.Logf("apply %q: %v; its outcome is unknown, trying another command", cmd, err)
	}
}

// invalidConfig is a change that makes a valid Config invalid, and part of the message that
// must name the problem.
type invalidConfig struct {
	name string
	mod  func(c *raft.Config)
	want string
}

// checkInvalidConfigs checks that ValidateConfig refuses each case with ErrInvalidConfig and a
// message naming the problem.
func checkInvalidConfigs(t *testing.T, cases []invalidConfig) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf := fastConfig("n1")
			tc.mod(conf)
			err := raft.ValidateConfig(conf)
			if !errors.Is(err, raft.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalidConfig naming %s", err, tc.want)
			}
		})
	}
}

// others returns the indexes of the nodes other than i.
func others(c *raftest.Cluster, i int) []int {
	var out []int
	for j := range c.Nodes() {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}
