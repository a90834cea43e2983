package raft_test

import (
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// TestStickiness_SurvivesRestart checks the premise lease reads rest on (read.go): a follower
// that acknowledged the leader's heartbeat refuses to vote for another candidate for
// HeartbeatTimeout, also when it restarts in between. Peers "l" (the leader) and "c" (a
// candidate) are bare transports, so the test sends every message itself.
func TestStickiness_SurvivesRestart(t *testing.T) {
	net := raft.NewInmemNetwork()
	lTrans, _ := net.NewTransport("l")
	cTrans, _ := net.NewTransport("c")
	defer lTrans.Close()
	defer cTrans.Close()
	store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	conf := fastConfig("a")
	conf.HeartbeatTimeout = time.Hour // no timer of a's fires during the test
	conf.ElectionTimeout = time.Hour
	conf.LeaderLeaseTimeout = time.Hour
	cluster := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "l", Address: "l"},
		{Suffrage: raft.Voter, ID: "a", Address: "a"},
		{Suffrage: raft.Voter, ID: "c", Address: "c"},
	}}
	start := func() *raft.Raft {
		tr, err := net.NewTransport("a")
		if err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(conf, raftest.NewRecordingFSM(), store, store, snaps, tr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	hdr := func(id string) raft.RPCHeader {
		return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: raft.ServerID(id), Addr: raft.ServerAddress(id)}
	}
	heartbeat := func() {
		var resp raft.AppendEntriesResponse
		req := &raft.AppendEntriesRequest{RPCHeader: hdr("l"), Term: 2, PrevLogIndex: 1, PrevLogTerm: 1}
		if err := lTrans.AppendEntries("a", "a", req, &resp); err != nil || !resp.Success {
			t.Fatalf("heartbeat: %v %+v", err, resp)
		}
	}
	voteGranted := func() bool {
		var resp raft.RequestVoteResponse
		req := &raft.RequestVoteRequest{RPCHeader: hdr("c"), Term: 3, LastLogIndex: 1, LastLogTerm: 1}
		if err := cTrans.RequestVote("a", "a", req, &resp); err != nil {
			t.Fatalf("vote: %v", err)
		}
		return resp.Granted
	}

	a := start()
	if err := a.BootstrapCluster(cluster).Error(); err != nil {
		t.Fatal(err)
	}
	heartbeat()
	if voteGranted() {
		t.Fatal("a granted c a vote right after acknowledging l's heartbeat")
	}
	// a crashes and restarts at once, well within HeartbeatTimeout of the acknowledgement.
	if err := a.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	a = start()
	defer a.Shutdown()
	if voteGranted() {
		t.Fatal("after a restart, a granted c a vote within HeartbeatTimeout of acknowledging l's heartbeat: l's lease still counts that acknowledgement")
	}
}
