package raft_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Tests for the core bugs of issue 10 ("a crash is not a shutdown"). They drive one real node
// (n1) against scripted peers, with stores that hold a read or a write at the exact point an
// interleaving needs, so each test lands its interleaving every time.

// scriptedPeer is a fake cluster member the test drives: handle answers every request n1
// sends it (on the peer's own goroutine), and the test sends requests to n1 through trans.
type scriptedPeer struct {
	id     raft.ServerID
	trans  *raft.InmemTransport
	handle func(rpc raft.RPC)

	mu       sync.Mutex
	appends  []*raft.AppendEntriesRequest // every AppendEntries n1 sent, guarded by mu
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func (p *scriptedPeer) header() raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: p.id, Addr: p.trans.LocalAddr()}
}

func (p *scriptedPeer) serve() {
	defer close(p.done)
	for {
		select {
		case rpc := <-p.trans.Consumer():
			if a, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				p.mu.Lock()
				p.appends = append(p.appends, a)
				p.mu.Unlock()
			}
			p.handle(rpc)
		case <-p.stop:
			return
		}
	}
}

// received returns the AppendEntries requests n1 sent to the peer so far.
func (p *scriptedPeer) received() []*raft.AppendEntriesRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*raft.AppendEntriesRequest(nil), p.appends...)
}

// send sends an AppendEntries to n1 as if the peer led req.Term.
func (p *scriptedPeer) send(req *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
	req.RPCHeader = p.header()
	var resp raft.AppendEntriesResponse
	err := p.trans.AppendEntries("n1", "addr-n1", req, &resp)
	return &resp, err
}

// grantVotes answers (pre-)vote requests with a grant; it reports whether rpc was one.
func (p *scriptedPeer) grantVotes(rpc raft.RPC) bool {
	switch req := rpc.Command.(type) {
	case *raft.RequestPreVoteRequest:
		rpc.Respond(&raft.RequestPreVoteResponse{RPCHeader: p.header(), Term: req.Term - 1, Granted: true}, nil)
	case *raft.RequestVoteRequest:
		rpc.Respond(&raft.RequestVoteResponse{RPCHeader: p.header(), Term: req.Term, Granted: true}, nil)
	default:
		return false
	}
	return true
}

// ackHeartbeat acknowledges an AppendEntries without entries; it reports whether rpc was one.
func (p *scriptedPeer) ackHeartbeat(rpc raft.RPC) bool {
	a, ok := rpc.Command.(*raft.AppendEntriesRequest)
	if !ok || len(a.Entries) > 0 {
		return false
	}
	rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: p.header(), Term: a.Term, Success: true, LastLogIndex: a.PrevLogIndex}, nil)
	return true
}

// scriptedCluster is n1 plus scripted peers "f" and "g", all voters.
type scriptedCluster struct {
	r      *raft.Raft
	logs   raft.LogStore
	f, g   *scriptedPeer
	net    *raft.InmemNetwork
	config raft.Configuration
}

// newScriptedCluster starts n1 over logs (an InmemStore underneath, whose bootstrap entry it
// writes) with two scripted peers; call it inside a synctest bubble.
func newScriptedCluster(t *testing.T, logs raft.LogStore, stable raft.StableStore, fHandle, gHandle func(p *scriptedPeer, rpc raft.RPC), tweaks ...func(*raft.Config)) *scriptedCluster {
	t.Helper()
	seed := testSeed(t)
	net := raft.NewInmemNetwork(seed)
	conf := fastConfig("n1")
	conf.RandSeed = seed
	conf.Logger = testLogger(t)
	for _, tweak := range tweaks {
		tweak(conf)
	}
	configuration := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "n1", Address: "addr-n1"},
		{Suffrage: raft.Voter, ID: "f", Address: "addr-f"},
		{Suffrage: raft.Voter, ID: "g", Address: "addr-g"},
	}}
	snaps := raft.NewInmemSnapshotStore()
	if err := raft.BootstrapCluster(conf, logs, stable, snaps, nil, configuration); err != nil {
		t.Fatal(err)
	}
	c := &scriptedCluster{logs: logs, net: net, config: configuration}
	for _, p := range []struct {
		peer   **scriptedPeer
		id     raft.ServerID
		handle func(*scriptedPeer, raft.RPC)
	}{{&c.f, "f", fHandle}, {&c.g, "g", gHandle}} {
		trans, err := net.NewTransport(raft.ServerAddress("addr-" + p.id))
		if err != nil {
			t.Fatal(err)
		}
		peer := &scriptedPeer{id: p.id, trans: trans, stop: make(chan struct{}), done: make(chan struct{})}
		handle := p.handle
		peer.handle = func(rpc raft.RPC) { handle(peer, rpc) }
		*p.peer = peer
		go peer.serve()
	}
	trans, err := net.NewTransport("addr-n1")
	if err != nil {
		t.Fatal(err)
	}
	if c.r, err = raft.NewRaft(conf, raftest.NewRecordingFSM(), logs, stable, snaps, trans); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.r.Shutdown().Error(); err != nil {
			t.Error(err)
		}
		for _, p := range []*scriptedPeer{c.f, c.g} {
			p.stopOnce.Do(func() { close(p.stop) })
			<-p.done
			_ = p.trans.Close()
		}
	})
	return c
}

// gatedReads is an InmemStore whose GetLog of one index blocks once, after arm, until the
// test releases it: a slow disk read landing exactly where the test needs it.
type gatedReads struct {
	*raft.InmemStore
	mu      sync.Mutex
	index   uint64        // guarded by mu; 0: no gate armed
	blocked chan struct{} // closed when a read reached the gate
	release chan struct{} // closed by the test
}

func newGatedReads() *gatedReads { return &gatedReads{InmemStore: raft.NewInmemStore()} }

// arm makes the next GetLog(index) block until the returned release is called.
func (s *gatedReads) arm(index uint64) (blocked <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index, s.blocked, s.release = index, make(chan struct{}), make(chan struct{})
	rel := s.release
	var once sync.Once
	return s.blocked, func() { once.Do(func() { close(rel) }) }
}

func (s *gatedReads) GetLog(index uint64, l *raft.Log) error {
	s.mu.Lock()
	var release chan struct{}
	if s.index != 0 && index == s.index {
		s.index = 0
		close(s.blocked)
		release = s.release
	}
	s.mu.Unlock()
	if release != nil {
		<-release
	}
	return s.InmemStore.GetLog(index, l)
}

// An old term's replicator must never send a log no leader had. n1 leads term 4 with entries
// 2-4 of term 2 in its log; follower g lags at index 1. While the replicator reads those
// entries for g (the read of entry 3 is slow), f, the leader of term 5, makes n1 step down and
// replaces entries 2-4 with its own of term 3. Before the fix the replicator finished its
// request from the new log and sent g entry 2 of term 2 followed by entries 3-4 of term 3
// under term 4: a log neither leader ever held, which g (still in term 4) accepts.
func TestReplicator_OldTermNeverSendsMixedLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := newGatedReads()
		var gateOnce sync.Once
		var blocked <-chan struct{}
		var release func()
		armed := make(chan struct{})
		fHandle := func(p *scriptedPeer, rpc raft.RPC) {
			if p.grantVotes(rpc) || p.ackHeartbeat(rpc) {
				return
			}
			// f stores nothing n1 sends, so nothing of term 4 commits.
			rpc.Respond(nil, errors.New("f refuses entries"))
		}
		gHandle := func(p *scriptedPeer, rpc raft.RPC) {
			if p.grantVotes(rpc) || p.ackHeartbeat(rpc) {
				return
			}
			a := rpc.Command.(*raft.AppendEntriesRequest)
			if a.PrevLogIndex > 1 {
				// g's log ends at 1: the replicator backs up to index 2 and reads 2-4 from
				// the store, with the read of entry 3 held.
				gateOnce.Do(func() {
					blocked, release = logs.arm(3)
					close(armed)
				})
				rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: p.header(), Term: a.Term, LastLogIndex: 1}, nil)
				return
			}
			last := a.PrevLogIndex + uint64(len(a.Entries))
			rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: p.header(), Term: a.Term, Success: true, LastLogIndex: last}, nil)
		}
		c := newScriptedCluster(t, logs, logs.InmemStore, fHandle, gHandle, func(conf *raft.Config) {
			conf.HeartbeatTimeout, conf.ElectionTimeout = time.Second, time.Second
			conf.LeaderLeaseTimeout = time.Second
		})
		// f leads term 2 and gives n1 entries 2-4; then f's term 3 reaches n1 without entries.
		term2 := []*raft.Log{
			{Index: 2, Term: 2, Type: raft.LogCommand, Data: []byte("t2-a")},
			{Index: 3, Term: 2, Type: raft.LogCommand, Data: []byte("t2-b")},
			{Index: 4, Term: 2, Type: raft.LogCommand, Data: []byte("t2-c")},
		}
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 1, PrevLogTerm: 1, Entries: term2}); err != nil || !resp.Success {
			t.Fatalf("term 2 entries: %+v, %v", resp, err)
		}
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 3, PrevLogIndex: 4, PrevLogTerm: 2}); err != nil || !resp.Success {
			t.Fatalf("term 3 heartbeat: %+v, %v", resp, err)
		}
		// f falls silent: n1 wins term 4.
		<-armed
		<-blocked
		if n1 := c.r.CurrentTerm(); n1 != 4 || c.r.State() != raft.Leader {
			t.Fatalf("n1 is %v in term %d, want leader of term 4", c.r.State(), n1)
		}
		// f leads term 5 with entries 2-4 of term 3, which n1 never had.
		term3 := []*raft.Log{
			{Index: 2, Term: 3, Type: raft.LogCommand, Data: []byte("t3-a")},
			{Index: 3, Term: 3, Type: raft.LogCommand, Data: []byte("t3-b")},
			{Index: 4, Term: 3, Type: raft.LogCommand, Data: []byte("t3-c")},
		}
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 5, PrevLogIndex: 1, PrevLogTerm: 1, LeaderCommitIndex: 1, Entries: term3}); err != nil || !resp.Success {
			t.Fatalf("term 5 entries: %+v, %v", resp, err)
		}
		release()
		synctest.Wait()
		// n1's log as leader of term 4: 1 (term 1), 2-4 (term 2), its no-op at 5 (term 4).
		leaderTerms := map[uint64]uint64{1: 1, 2: 2, 3: 2, 4: 2, 5: 4}
		for _, a := range c.g.received() {
			if a.Term != 4 {
				continue
			}
			if want, ok := leaderTerms[a.PrevLogIndex]; a.PrevLogIndex > 0 && (!ok || want != a.PrevLogTerm) {
				t.Fatalf("term 4 request with previous entry %d of term %d; n1's term 4 log has term %d there", a.PrevLogIndex, a.PrevLogTerm, want)
			}
			for _, e := range a.Entries {
				if want := leaderTerms[e.Index]; want != e.Term {
					t.Fatalf("term 4 request carries entry %d of term %d (%q); n1's term 4 log has term %d there", e.Index, e.Term, e.Data, want)
				}
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

func newGatedWrites() *gatedWrites { return &gatedWrites{InmemStore: raft.NewInmemStore()} }

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
