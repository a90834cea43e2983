package raft_test

import (
	"sync"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// fakeAddr is the address of the fake leader that soloNode's tests send requests as.
const fakeAddr = raft.ServerAddress("addr-fake")

// gatedStable is a StableStore whose writes of the current term wait, once armed, until the
// test opens the gate.
type gatedStable struct {
	*raft.InmemStore
	mu   sync.Mutex
	gate chan struct{} // guarded by mu; nil: writes pass
}

func (s *gatedStable) SetUint64(key []byte, val uint64) error {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil && string(key) == "CurrentTerm" {
		<-gate
	}
	return s.InmemStore.SetUint64(key, val)
}

// arm makes the next term writes wait; the returned func opens the gate for good.
func (s *gatedStable) arm() (open func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.gate = nil
		s.mu.Unlock()
		close(gate)
	}
}

// soloNode is one real node (n1) whose configuration names two more voters: a fake leader
// the test drives through its own transport, and n3, which never exists.
type soloNode struct {
	r      *raft.Raft
	logs   *raft.InmemStore
	stable *gatedStable
	fsm    *raftest.RecordingFSM
	fake   *raft.InmemTransport
	addr   raft.ServerAddress
}

// newSoloNode starts a soloNode; call it inside a synctest bubble.
func newSoloNode(t *testing.T, tweaks ...func(*raft.Config)) *soloNode {
	t.Helper()
	seed := testSeed(t)
	net := raft.NewInmemNetwork()
	store := raft.NewInmemStore()
	n := &soloNode{logs: store, stable: &gatedStable{InmemStore: store}, fsm: raftest.NewRecordingFSM(), addr: "addr-n1"}
	conf := fastConfig("n1")
	conf.RandSeed = seed
	conf.Logger = testLogger(t)
	for _, tweak := range tweaks {
		tweak(conf)
	}
	snaps := raft.NewInmemSnapshotStore()
	configuration := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "n1", Address: n.addr},
		{Suffrage: raft.Voter, ID: "fake", Address: fakeAddr},
		{Suffrage: raft.Voter, ID: "n3", Address: "addr-n3"},
	}}
	if err := raft.BootstrapCluster(conf, store, n.stable, snaps, nil, configuration); err != nil {
		t.Fatal(err)
	}
	trans, err := net.NewTransport(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	if n.fake, err = net.NewTransport(fakeAddr); err != nil {
		t.Fatal(err)
	}
	if n.r, err = raft.NewRaft(conf, n.fsm, store, n.stable, snaps, trans); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.r.Shutdown().Error(); err != nil {
			t.Error(err)
		}
		_ = n.fake.Close()
	})
	return n
}

func fakeHeader() raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: "fake", Addr: fakeAddr}
}

// send sends an AppendEntries from the fake leader.
func (n *soloNode) send(req *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
	req.RPCHeader = fakeHeader()
	var resp raft.AppendEntriesResponse
	err := n.fake.AppendEntries("n1", n.addr, req, &resp)
	return &resp, err
}

func (n *soloNode) storedTerm(t *testing.T) uint64 {
	t.Helper()
	term, err := n.logs.GetUint64([]byte("CurrentTerm"))
	if err != nil {
		t.Fatal(err)
	}
	return term
}
