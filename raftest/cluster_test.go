package raftest_test

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

const wait = 10 * time.Second

// errStoreClosed is what a closableStore returns once closed.
var errStoreClosed = errors.New("store closed")

// closableStore is an InmemStore that can be closed, after which it refuses every call, as a
// closed wal.Store does. Reopening wraps the same InmemStore, which plays the disk.
type closableStore struct {
	*raft.InmemStore
	mu     sync.Mutex
	closed bool
}

func (s *closableStore) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStoreClosed
	}
	return nil
}

func (s *closableStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("closed twice")
	}
	s.closed = true
	return nil
}

func (s *closableStore) StoreLogs(logs []*raft.Log) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.InmemStore.StoreLogs(logs)
}

func (s *closableStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *closableStore) GetLog(index uint64, l *raft.Log) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.InmemStore.GetLog(index, l)
}

// disks opens closableStores over one InmemStore per node and counts opens and closes.
type disks struct {
	mu     sync.Mutex
	disks  map[raft.ServerID]*raft.InmemStore
	snaps  map[raft.ServerID]*raft.InmemSnapshotStore
	opened map[raft.ServerID][]*closableStore
}

func newDisks() *disks {
	return &disks{
		disks:  make(map[raft.ServerID]*raft.InmemStore),
		snaps:  make(map[raft.ServerID]*raft.InmemSnapshotStore),
		opened: make(map[raft.ServerID][]*closableStore),
	}
}

func (d *disks) open(id raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.disks[id] == nil {
		d.disks[id], d.snaps[id] = raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	}
	s := &closableStore{InmemStore: d.disks[id]}
	d.opened[id] = append(d.opened[id], s)
	return s, s, d.snaps[id], nil
}

// openClosed reports how often id's stores were opened and how many of those are closed.
func (d *disks) openClosed(id raft.ServerID) (opened, closed int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.opened[id] {
		if s.check() != nil {
			closed++
		}
	}
	return len(d.opened[id]), closed
}

func TestCluster_OpenStoresReopensOnStartAndClosesOnCrash(t *testing.T) {
	d := newDisks()
	raftest.Run(t, raftest.Options{OpenStores: d.open}, func(t *testing.T, c *raftest.Cluster) {
		c.WaitLeader(wait)
		if _, err := c.Apply([]byte("one"), wait); err != nil {
			t.Fatal(err)
		}
		id := c.Node(1).ID
		if o, cl := d.openClosed(id); o != 1 || cl != 0 {
			t.Fatalf("before a crash: opened %d, closed %d; want 1, 0", o, cl)
		}
		c.Crash(1)
		if o, cl := d.openClosed(id); o != 1 || cl != 1 {
			t.Fatalf("after a crash: opened %d, closed %d; want 1, 1", o, cl)
		}
		c.Start(1)
		f, err := c.Apply([]byte("two"), wait)
		if err != nil {
			t.Fatal(err)
		}
		c.WaitApplied(f.Index(), wait)
		if o, cl := d.openClosed(id); o != 2 || cl != 1 {
			t.Fatalf("after a restart: opened %d, closed %d; want 2, 1", o, cl)
		}
		c.CheckSafety()
	})
	for _, id := range []raft.ServerID{"n1", "n2", "n3"} {
		if o, cl := d.openClosed(id); o != cl {
			t.Fatalf("%s: %d stores opened but %d closed after the cluster stopped", id, o, cl)
		}
	}
}

// renamingTransports builds transports on a private in-memory network, at addresses the
// harness does not choose, and counts how often each node got one.
type renamingTransports struct {
	net    *raft.InmemNetwork
	mu     sync.Mutex
	starts map[raft.ServerID]int
	wrong  raft.ServerID // this node gets a new address at its restart
}

func (r *renamingTransports) newTransport(id raft.ServerID, addr raft.ServerAddress, _ hclog.Logger) (raft.Transport, error) {
	r.mu.Lock()
	r.starts[id]++
	start := r.starts[id]
	r.mu.Unlock()
	if addr == "" || id == r.wrong {
		addr = raft.ServerAddress(fmt.Sprintf("custom-%s-%d", id, start))
	}
	return r.net.NewTransport(addr)
}

func (r *renamingTransports) startsOf(id raft.ServerID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starts[id]
}

func TestCluster_CustomTransportGivesAddressesAndKeepsThemAcrossRestart(t *testing.T) {
	rt := &renamingTransports{net: raft.NewInmemNetwork(), starts: make(map[raft.ServerID]int)}
	raftest.Run(t, raftest.Options{NewTransport: rt.newTransport}, func(t *testing.T, c *raftest.Cluster) {
		if c.Net != nil {
			t.Fatal("Net is set on a cluster with a custom transport")
		}
		leader := c.WaitLeader(wait)
		for i, n := range c.Nodes() {
			if want := raft.ServerAddress(fmt.Sprintf("custom-n%d-1", i+1)); n.Addr != want {
				t.Fatalf("node %d has address %s, want its transport's %s", i, n.Addr, want)
			}
		}
		c.Restart(leader)
		f, err := c.Apply([]byte("after restart"), wait)
		if err != nil {
			t.Fatal(err)
		}
		c.WaitApplied(f.Index(), wait)
		if got := c.Node(leader).Addr; got != raft.ServerAddress(fmt.Sprintf("custom-%s-1", c.Node(leader).ID)) {
			t.Fatalf("restarted node has address %s", got)
		}
		if n := rt.startsOf(c.Node(leader).ID); n != 2 {
			t.Fatalf("restarted node got %d transports, want 2", n)
		}
	})
}

// fatalRecorder is a testing.TB whose Fatal and Fatalf record the message and end the
// calling goroutine, so a test can check that the harness refuses something.
type fatalRecorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fatalRecorder) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

// fatalOf runs fn on its own goroutine and returns the message it failed the test with.
func (f *fatalRecorder) fatalOf(fn func()) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	msg := f.msg
	f.msg = ""
	return msg
}

func TestCluster_FaultsFailTheTestWithCustomTransport(t *testing.T) {
	rt := &renamingTransports{net: raft.NewInmemNetwork(), starts: make(map[raft.ServerID]int)}
	rec := &fatalRecorder{TB: t}
	c := raftest.New(rec, raftest.Options{NewTransport: rt.newTransport})
	for name, fault := range map[string]func(){
		"Partition": func() { c.Partition([]int{0}, []int{1, 2}) },
		"Isolate":   func() { c.Isolate(0) },
		"Heal":      c.Heal,
	} {
		if msg := rec.fatalOf(fault); msg == "" {
			t.Errorf("%s on a cluster with a custom transport did not fail the test", name)
		} else {
			t.Logf("%s: %s", name, msg)
		}
	}
}

func TestCluster_RestartAtAnotherAddressFailsTheTest(t *testing.T) {
	rt := &renamingTransports{net: raft.NewInmemNetwork(), starts: make(map[raft.ServerID]int), wrong: "n2"}
	rec := &fatalRecorder{TB: t}
	c := raftest.New(rec, raftest.Options{NewTransport: rt.newTransport})
	c.Crash(1)
	if msg := rec.fatalOf(func() { c.Start(1) }); msg == "" {
		t.Fatal("a restart at a new address did not fail the test")
	} else {
		t.Log(msg)
	}
}
