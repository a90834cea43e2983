package raft_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Scripted clusters: one real node (n1) against scripted peers, with stores that hold a read or
// a write at the exact point an interleaving needs, so each test lands its interleaving every
// time. The tests that use them found bugs of the crash model (docs/design.md, section 11).

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
	return newScriptedClusterFSM(t, raftest.NewRecordingFSM(), logs, stable, fHandle, gHandle, tweaks...)
}

// newScriptedClusterFSM is newScriptedCluster with n1 running fsm.
func newScriptedClusterFSM(t *testing.T, fsm raft.FSM, logs raft.LogStore, stable raft.StableStore, fHandle, gHandle func(p *scriptedPeer, rpc raft.RPC), tweaks ...func(*raft.Config)) *scriptedCluster {
	t.Helper()
	seed := testSeed(t)
	net := raft.NewInmemNetwork()
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
	if c.r, err = raft.NewRaft(conf, fsm, logs, stable, snaps, trans); err != nil {
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

// slowFSM is a RecordingFSM that takes perApply of (virtual) time for every entry.
type slowFSM struct {
	*raftest.RecordingFSM
	perApply time.Duration
}

func (f *slowFSM) Apply(l *raft.Log) any {
	time.Sleep(f.perApply) // models a slow state machine; virtual time inside the bubble
	return f.RecordingFSM.Apply(l)
}

// A slow FSM must slow clients down, never cost the cluster its leader. Open-loop load of
// 1,000 commands/s against FSMs that take 20ms per command: before the fix the followers'
// main loops blocked handing batches to their full FSM queues, stopped answering
// heartbeats, and the term climbed from election to election. With small batches the FSM
// queue's bound (64 batches) is below the load, so the main loop's hold-back and the
// leader's back-pressure (ErrEnqueueTimeout) are exercised too.
func TestFSMHandoff_SlowFSMNeverCostsTheLeader(t *testing.T) {
	for _, tc := range []struct {
		name           string
		maxAppend      int
		wantTurnedAway bool
	}{
		{"default batches", 64, false},
		{"small batches", 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testSlowFSMKeepsLeader(t, tc.maxAppend, tc.wantTurnedAway)
		})
	}
}

func testSlowFSMKeepsLeader(t *testing.T, maxAppend int, wantTurnedAway bool) {
	opts := raftest.Options{Nodes: 3, NewFSM: func(raft.ServerID) raft.FSM {
		return &slowFSM{RecordingFSM: raftest.NewRecordingFSM(), perApply: 20 * time.Millisecond}
	}, Config: func(c *raft.Config) { c.MaxAppendEntries = maxAppend }}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		term := r.CurrentTerm()
		var wg sync.WaitGroup
		var mu sync.Mutex
		outcomes := map[string]int{}
		tick := time.NewTicker(time.Millisecond)
		for i := 0; i < 2000; i++ {
			<-tick.C
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := r.Apply(fmt.Appendf(nil, "load-%d", i), 500*time.Millisecond).Error()
				kind := "ok"
				switch {
				case err == nil:
				case errors.Is(err, raft.ErrEnqueueTimeout):
					kind = "enqueue timeout"
				case errors.Is(err, raft.ErrTimeout):
					kind = "timeout"
				default:
					kind = err.Error()
				}
				mu.Lock()
				outcomes[kind]++
				mu.Unlock()
			}()
		}
		tick.Stop()
		wg.Wait()
		for i := range c.Nodes() {
			if got := c.Node(i).Raft().CurrentTerm(); got != term {
				t.Fatalf("node %d is in term %d, the leader was elected in %d (outcomes %v)", i, got, term, outcomes)
			}
		}
		if r.State() != raft.Leader {
			t.Fatalf("the leader is now %v (outcomes %v)", r.State(), outcomes)
		}
		for kind, n := range outcomes {
			if kind != "ok" && kind != "enqueue timeout" && kind != "timeout" {
				t.Fatalf("%d applies failed with %q; want only slower applies or timeouts", n, kind)
			}
		}
		if outcomes["ok"] == 0 || wantTurnedAway && outcomes["enqueue timeout"] == 0 {
			t.Fatalf("outcomes %v: want some applies to succeed (and, with small batches, the back-pressure to turn some away before they were queued)", outcomes)
		}
		t.Logf("outcomes under overload: %v", outcomes)
	})
}

// gatedRestoreFSM is a RecordingFSM whose Restore waits, once armed, until the test releases
// it: a slow restore landing exactly where the test needs it.
type gatedRestoreFSM struct {
	*raftest.RecordingFSM
	entered chan struct{} // closed when Restore started
	release chan struct{} // closed by the test
}

func (f *gatedRestoreFSM) Restore(rc io.ReadCloser) error {
	close(f.entered)
	<-f.release
	return f.RecordingFSM.Restore(rc)
}

// blockingReader hands out data only once released: a snapshot transfer that stalls.
type blockingReader struct {
	release chan struct{}
	data    io.Reader
}

func (b *blockingReader) Read(p []byte) (int, error) {
	<-b.release
	return b.data.Read(p)
}

// A follower receiving a snapshot keeps answering heartbeats for the whole transfer and the
// FSM restore. Before the fix both ran on its main loop: a stalled transfer or a slow restore
// left the leader's heartbeats unanswered until the follower's election timer fired.
func TestInstallSnapshot_HeartbeatsAnsweredDuringTransferAndRestore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fsm := &gatedRestoreFSM{RecordingFSM: raftest.NewRecordingFSM(), entered: make(chan struct{}), release: make(chan struct{})}
		store := raft.NewInmemStore()
		quiet := func(p *scriptedPeer, rpc raft.RPC) {
			if !p.ackHeartbeat(rpc) {
				rpc.Respond(nil, errors.New("scripted peer is quiet"))
			}
		}
		c := newScriptedClusterFSM(t, fsm, store, store, quiet, quiet)
		transfer := &blockingReader{release: make(chan struct{})}
		var releaseTransfer, releaseRestore sync.Once
		// Runs before the node's shutdown (cleanups run last first): a failed check must not
		// leave the shutdown waiting on a held transfer or restore.
		t.Cleanup(func() {
			releaseTransfer.Do(func() { close(transfer.release) })
			releaseRestore.Do(func() { close(fsm.release) })
		})
		heartbeat := func(what string) {
			t.Helper()
			var resp *raft.AppendEntriesResponse
			var err error
			if !within(10*time.Millisecond, func() { resp, err = c.f.send(&raft.AppendEntriesRequest{Term: 2}) }) {
				t.Fatalf("heartbeat %s not answered within 10ms", what)
			}
			if err != nil || !resp.Success {
				t.Fatalf("heartbeat %s: %+v, %v", what, resp, err)
			}
		}
		heartbeat("before the install")
		data := []byte("[]\n") // an empty RecordingFSM
		cfg := raft.EncodeConfiguration(c.config)
		transfer.data = bytes.NewReader(data)
		installed := make(chan error, 1)
		go func() {
			req := &raft.InstallSnapshotRequest{RPCHeader: c.f.header(), SnapshotVersion: raft.SnapshotVersion, Term: 2,
				LastLogIndex: 10, LastLogTerm: 2, Configuration: cfg, ConfigurationIndex: 1, Size: int64(len(data))}
			var resp raft.InstallSnapshotResponse
			err := c.f.trans.InstallSnapshot("n1", "addr-n1", req, &resp, transfer)
			if err == nil && !resp.Success {
				err = fmt.Errorf("install refused: %+v", resp)
			}
			installed <- err
		}()
		synctest.Wait() // the transfer has started and stalls
		heartbeat("during the transfer")
		releaseTransfer.Do(func() { close(transfer.release) })
		<-fsm.entered
		heartbeat("during the FSM restore")
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 10, PrevLogTerm: 2, LeaderCommitIndex: 10,
			Entries: []*raft.Log{{Index: 11, Term: 2, Type: raft.LogCommand, Data: []byte("too early")}}}); err == nil {
			t.Fatalf("entries accepted while the snapshot is restored: %+v", resp)
		}
		releaseRestore.Do(func() { close(fsm.release) })
		if err := <-installed; err != nil {
			t.Fatalf("install: %v", err)
		}
		if got := c.r.Stats()["last_snapshot_index"]; got != "10" {
			t.Fatalf("snapshot index %s after the install, want 10", got)
		}
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 10, PrevLogTerm: 2, LeaderCommitIndex: 11,
			Entries: []*raft.Log{{Index: 11, Term: 2, Type: raft.LogCommand, Data: []byte("after")}}}); err != nil || !resp.Success {
			t.Fatalf("append after the install: %+v, %v", resp, err)
		}
		if !raftest.Eventually(time.Second, func() bool { return c.r.AppliedIndex() == 11 }) {
			t.Fatalf("applied %d, want 11", c.r.AppliedIndex())
		}
	})
}

// serverSuffrage returns id's suffrage in c, and whether it is there.
func serverSuffrage(c raft.Configuration, id raft.ServerID) (raft.ServerSuffrage, bool) {
	for _, s := range c.Servers {
		if s.ID == id {
			return s.Suffrage, true
		}
	}
	return 0, false
}

// A leader transferring leadership promises to append nothing new, membership changes
// included. Before the fix the promotion of a caught-up nonvoter (and any queued change) ran
// from the leader's tick without looking at the transfer. Here n4's AddVoter waits for n4 to
// catch up while a transfer to a lagging voter is in progress; n4 catches up: the promotion
// must wait for the transfer to end, and go through once it failed.
func TestMembership_NoConfigChangeDuringLeadershipTransfer(t *testing.T) {
	opts := raftest.Options{Nodes: 4, InitialVoters: 3, Config: func(c *raft.Config) {
		c.ElectionTimeout = time.Second // the transfer gives up after two of them
		c.MaxAppendEntries = 1          // "caught up" means within one entry of the leader
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		var voters []int
		for _, i := range others(c, leader) {
			if i != 3 {
				voters = append(voters, i)
			}
		}
		target, other := voters[0], voters[1]
		n4 := c.Node(3)
		// n4 cannot catch up yet: its AddVoter stops at the nonvoter step.
		c.Partition([]int{leader, target, other})
		applyN(t, c, "history", 5)
		added := r.AddVoter(n4.ID, n4.Addr, 0, 0)
		c.WaitFor(waitLong, "n4 to join as a nonvoter", func() bool {
			s, ok := serverSuffrage(r.GetConfiguration().Configuration(), n4.ID)
			return ok && s == raft.Nonvoter && r.CommitIndex() >= r.GetConfiguration().Index()
		})
		// The target lags behind an entry the others commit, so the transfer waits for it.
		c.Partition([]int{leader, other})
		mustApply(t, c, "target-misses-this")
		configIndex := r.GetConfiguration().Index()
		transfer := r.LeadershipTransferToServer(c.Node(target).ID, c.Node(target).Addr)
		// n4 catches up during the transfer.
		c.Partition([]int{leader, other, 3})
		c.WaitFor(waitLong, "n4 to catch up", func() bool { return n4.Raft().LastIndex() >= r.LastIndex() })
		if raftest.Eventually(500*time.Millisecond, func() bool { return r.GetConfiguration().Index() != configIndex }) {
			t.Fatalf("configuration entry appended at %d during the leadership transfer (was %d)", r.GetConfiguration().Index(), configIndex)
		}
		if err := transfer.Error(); !errors.Is(err, raft.ErrLeadershipTransferFailed) {
			t.Fatalf("transfer to a cut-off voter: %v, want ErrLeadershipTransferFailed", err)
		}
		c.Heal()
		if err := added.Error(); err != nil {
			t.Fatalf("AddVoter after the transfer failed: %v", err)
		}
		if s, _ := serverSuffrage(c.Node(c.WaitLeader(waitLong)).Raft().GetConfiguration().Configuration(), n4.ID); s != raft.Voter {
			t.Fatalf("n4 is %v after the promotion", s)
		}
	})
}

// sendTimeoutNow sends n1 a TimeoutNow from p.
func (p *scriptedPeer) sendTimeoutNow(term, lastIndex uint64) error {
	req := &raft.TimeoutNowRequest{RPCHeader: p.header(), Term: term, LastLogIndex: lastIndex}
	var resp raft.TimeoutNowResponse
	return p.trans.TimeoutNow("n1", "addr-n1", req, &resp)
}

// sendPreVote asks n1 for a pre-vote from p for term, with p's log ending at lastIndex/lastTerm.
func (p *scriptedPeer) sendPreVote(term, lastIndex, lastTerm uint64) (bool, error) {
	req := &raft.RequestPreVoteRequest{RPCHeader: p.header(), Term: term, LastLogIndex: lastIndex, LastLogTerm: lastTerm}
	var resp raft.RequestPreVoteResponse
	err := p.trans.RequestPreVote("n1", "addr-n1", req, &resp)
	return resp.Granted, err
}

// Decision (issue 10, bug 6): a TimeoutNow starts a transfer election (no pre-vote, voters
// ignore their leader stickiness) only when it certainly belongs to a live transfer: it comes
// from the leader n1 follows, in n1's term, and n1's log still ends where the leader saw it
// end. Before, any TimeoutNow of the current or a newer term did, including one that arrived
// after its leader gave the transfer up and appended again.
func TestTimeoutNow_StaleOrForeignRequestStartsNoElection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := raft.NewInmemStore()
		quiet := func(p *scriptedPeer, rpc raft.RPC) {
			if !p.ackHeartbeat(rpc) {
				rpc.Respond(nil, errors.New("scripted peer is quiet"))
			}
		}
		c := newScriptedCluster(t, store, store, quiet, quiet, func(conf *raft.Config) {
			conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Minute, time.Minute, time.Minute
		})
		// f leads term 2; n1 holds its entries up to 3.
		entries := []*raft.Log{
			{Index: 2, Term: 2, Type: raft.LogNoop},
			{Index: 3, Term: 2, Type: raft.LogCommand, Data: []byte("x")},
		}
		if resp, err := c.f.send(&raft.AppendEntriesRequest{Term: 2, PrevLogIndex: 1, PrevLogTerm: 1, LeaderCommitIndex: 3, Entries: entries}); err != nil || !resp.Success {
			t.Fatalf("append: %+v, %v", resp, err)
		}
		refused := []struct {
			what string
			send func() error
		}{
			{"from a node that is not the leader", func() error { return c.g.sendTimeoutNow(2, 3) }},
			{"of an older term", func() error { return c.f.sendTimeoutNow(1, 3) }},
			{"of a newer term", func() error { return c.f.sendTimeoutNow(3, 3) }},
			{"sent for a log that has moved on since (the leader gave up)", func() error { return c.f.sendTimeoutNow(2, 2) }},
		}
		for _, tc := range refused {
			if err := tc.send(); !errors.Is(err, raft.ErrLeadershipTransferFailed) {
				t.Fatalf("TimeoutNow %s: %v, want ErrLeadershipTransferFailed", tc.what, err)
			}
			if st, term := c.r.State(), c.r.CurrentTerm(); st != raft.Follower || term != 2 {
				t.Fatalf("TimeoutNow %s: n1 is %v in term %d, want a follower in term 2", tc.what, st, term)
			}
		}
		// The live transfer goes through.
		if err := c.f.sendTimeoutNow(2, 3); err != nil {
			t.Fatalf("TimeoutNow of the live transfer: %v", err)
		}
		if !raftest.Eventually(time.Second, func() bool { return c.r.CurrentTerm() == 3 }) {
			t.Fatalf("n1 is %v in term %d after a valid TimeoutNow, want an election in term 3", c.r.State(), c.r.CurrentTerm())
		}
	})
}

// Decision (issue 10, bug 6): pre-vote is granted only for a term strictly above the voter's,
// as etcd does. A candidate asks for the term it would campaign in; in the voter's own term a
// real vote may already be cast, so granting there promised an election the candidate could
// not win. Before, an equal term was granted.
func TestPreVote_GrantedOnlyForAHigherTerm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := raft.NewInmemStore()
		quiet := func(p *scriptedPeer, rpc raft.RPC) { rpc.Respond(nil, errors.New("scripted peer is quiet")) }
		c := newScriptedCluster(t, store, store, quiet, quiet, func(conf *raft.Config) {
			conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Minute, time.Minute, time.Minute
		})
		// A node that just started counts as having heard from a leader for HeartbeatTimeout
		// (its previous incarnation may have acknowledged one): let that window pass, in the
		// bubble's virtual time.
		time.Sleep(time.Minute)
		// A vote request of term 3 that n1 refuses (g's log is behind) moves n1 to term 3
		// without a leader.
		var resp raft.RequestVoteResponse
		if err := c.g.trans.RequestVote("n1", "addr-n1", &raft.RequestVoteRequest{RPCHeader: c.g.header(), Term: 3}, &resp); err != nil || resp.Granted {
			t.Fatalf("vote request: %+v, %v", resp, err)
		}
		if term := c.r.CurrentTerm(); term != 3 {
			t.Fatalf("n1 in term %d, want 3", term)
		}
		if granted, err := c.f.sendPreVote(3, 1, 1); err != nil || granted {
			t.Fatalf("pre-vote for n1's own term: granted %v, %v; want refused", granted, err)
		}
		if granted, err := c.f.sendPreVote(4, 1, 1); err != nil || !granted {
			t.Fatalf("pre-vote for the next term: granted %v, %v; want granted", granted, err)
		}
	})
}

// A node never acknowledges entries it does not hold. Leader L restores a backup while cut
// off: its snapshot S (never committed) replaces its log. n, elected by the others, has a log
// ending below S. With the third node cut off, n's writes can only commit through L. Before
// the fix L skipped every entry at or below its snapshot and answered Success, so n committed
// (and acknowledged) writes L never stored; they were lost at the next leader change. Now L
// acknowledges nothing until n reset it from a snapshot of n's (which takes an entry of n's
// term committed with the third node's help); every write that commits must survive.
// With restart, L restarts between its failed Restore and meeting n (the mark is durable),
// as a leader that crashed in the middle of its Restore would.
func TestRestore_UncommittedRestoreNeverAcknowledgesEntriesItLacks(t *testing.T) {
	t.Run("running", func(t *testing.T) { testUncommittedRestoreFenced(t, false) })
	t.Run("restart", func(t *testing.T) { testUncommittedRestoreFenced(t, true) })
}

func testUncommittedRestoreFenced(t *testing.T, restart bool) {
	raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 3)
		r := c.Node(leader).Raft()
		last := r.LastIndex()
		c.Isolate(leader)
		// Dispatched, never committed: they put L's log, and so its restored snapshot, past
		// anything the next leader holds.
		for i := 0; i < 5; i++ {
			r.Apply(fmt.Appendf(nil, "lost-%d", i), 0)
		}
		c.WaitFor(waitLong, "the commands to be dispatched", func() bool { return r.LastIndex() >= last+5 })
		if err := r.Restore(meta, bytes.NewReader(data), 50*time.Millisecond); err == nil {
			t.Fatal("a restore committed without a quorum")
		}
		restoredAt := statU(t, c, leader, "last_snapshot_index")
		var next int
		c.WaitFor(waitLong, "a new leader among the others", func() bool {
			next = c.Leader()
			return next >= 0 && next != leader
		})
		if restart {
			c.Restart(leader)
			r = c.Node(leader).Raft()
			if got := statU(t, c, leader, "last_snapshot_index"); got != restoredAt {
				t.Fatalf("restarted with snapshot %d, want the restored %d", got, restoredAt)
			}
		}
		c.Heal() // Partition keeps isolations
		c.Partition([]int{leader, next})
		c.WaitFor(waitLong, "the old leader to follow the new one", func() bool {
			return r.Leader() == c.Node(next).Addr || isStopped(r)
		})
		nr := c.Node(next).Raft()
		var committed []string
		for i := 0; i < 3; i++ {
			name := fmt.Sprintf("write-%d", i)
			if err := nr.Apply([]byte(name), 500*time.Millisecond).Error(); err == nil {
				// Only possible once the old leader was reset from the new leader's
				// snapshot (which needs an entry of the new term committed first): it
				// then holds what it acknowledges.
				committed = append(committed, name)
			}
		}
		c.Heal()
		g := mustApply(t, c, "after")
		got := c.WaitSameCommands(g.Index(), waitLong)
		for _, name := range committed {
			if !slices.Contains(got, name) {
				t.Fatalf("acknowledged %s is lost: the cluster holds %v (the old leader's restored snapshot was at %d)", name, got, restoredAt)
			}
		}
		c.CheckSafety()
	})
}

func isStopped(r *raft.Raft) bool {
	select {
	case <-r.Stopped():
		return true
	default:
		return false
	}
}

// A leader that crashes inside its own Restore before it dropped its log is undone at
// restart: it starts from its previous snapshot and log, as if the Restore never happened
// (no node can have counted on the restored snapshot yet), instead of starting from a snapshot
// the cluster never committed and being stopped once it meets the next leader's log.
func TestRestore_LeaderCrashBeforeDroppingItsLogIsUndone(t *testing.T) {
	for _, p := range []raftest.CrashPoint{raftest.CrashInSnapshotClose, raftest.CrashInFSMRestore} {
		t.Run(p.String(), func(t *testing.T) {
			raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
				leader, meta, data := keptAndBackedUp(t, c, 3)
				last := applyN(t, c, "more", 3)
				c.WaitApplied(last, waitLong)
				c.CrashAt(leader, p, 0)
				err := c.Node(leader).Raft().Restore(meta, bytes.NewReader(data), time.Second)
				if c.Node(leader).Running() {
					t.Fatalf("the leader did not crash inside %v (Restore returned %v)", p, err)
				}
				c.Start(leader)
				r := c.Node(leader).Raft()
				f := mustApply(t, c, "between")
				c.WaitSameCommands(f.Index(), waitLong)
				if isStopped(r) {
					t.Fatalf("the restarted leader stopped: %v", r.ShutdownCause())
				}
				want := []string{"kept-0", "kept-1", "kept-2", "more-0", "more-1", "more-2", "between"}
				expectCommands(t, c, want)
				c.CheckSafety()
			})
		})
	}
}
