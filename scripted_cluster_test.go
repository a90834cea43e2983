package raft_test

import (
	"sync"
	"testing"

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
