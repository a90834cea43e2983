package raft_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Malformed input from peers (docs/design.md, section 10).

// malformedAppends are AppendEntries requests no correct leader sends; each must be refused
// with ErrBadRequest. term is a term above the cluster's: a malformed request must not
// move the receiver to it.
func malformedAppends(term uint64) map[string]*raft.AppendEntriesRequest {
	cmd := func(index, t uint64) *raft.Log {
		return &raft.Log{Index: index, Term: t, Type: raft.LogCommand, Data: []byte("evil")}
	}
	return map[string]*raft.AppendEntriesRequest{
		"nil entry":               {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{nil}},
		"nil entry in the middle": {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{cmd(2, 1), nil, cmd(4, 1)}},
		"unknown log type":        {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{{Index: 2, Term: 1, Type: 99}}},
		"log type zero":           {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{{Index: 2, Term: 1}}},
		"undecodable configuration": {Term: term, PrevLogIndex: 1, PrevLogTerm: 1,
			Entries: []*raft.Log{{Index: 2, Term: 1, Type: raft.LogConfiguration, Data: []byte{0xc1, 0xff, 0x00}}}},
		"empty configuration": {Term: term, PrevLogIndex: 1, PrevLogTerm: 1,
			Entries: []*raft.Log{{Index: 2, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(raft.Configuration{})}}},
		"index gap":                {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{cmd(2, 1), cmd(4, 1)}},
		"index not after prev":     {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{cmd(1, 1)}},
		"index zero":               {Term: term, Entries: []*raft.Log{cmd(0, 1)}},
		"decreasing indexes":       {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{cmd(3, 1), cmd(2, 1)}},
		"entry term above request": {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{cmd(2, term+1)}},
		"entry term zero":          {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{cmd(2, 0)}},
		"entry terms decreasing":   {Term: term, PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*raft.Log{cmd(2, 3), cmd(3, 2)}},
		"entry term below prev":    {Term: term, PrevLogIndex: 1, PrevLogTerm: 3, Entries: []*raft.Log{cmd(2, 2)}},
		"prev index without term":  {Term: term, PrevLogIndex: 1, Entries: []*raft.Log{cmd(2, 1)}},
		"index overflow": {Term: term, PrevLogIndex: ^uint64(0) - 1, PrevLogTerm: 1,
			Entries: []*raft.Log{cmd(^uint64(0), 1), cmd(0, 1)}},
	}
}

// malformedSnapshots are InstallSnapshot requests that must be refused with ErrBadRequest.
func malformedSnapshots(term uint64) map[string]*raft.InstallSnapshotRequest {
	good := raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{{ID: "x", Address: "addr-x"}}})
	snap := func(mod func(r *raft.InstallSnapshotRequest)) *raft.InstallSnapshotRequest {
		r := &raft.InstallSnapshotRequest{SnapshotVersion: raft.SnapshotVersion, Term: term, LastLogIndex: 1000,
			LastLogTerm: term, Configuration: good, ConfigurationIndex: 1, Size: 4}
		mod(r)
		return r
	}
	return map[string]*raft.InstallSnapshotRequest{
		"negative size":            snap(func(r *raft.InstallSnapshotRequest) { r.Size = -5 }),
		"unknown version":          snap(func(r *raft.InstallSnapshotRequest) { r.SnapshotVersion = 99 }),
		"version zero":             snap(func(r *raft.InstallSnapshotRequest) { r.SnapshotVersion = 0 }),
		"garbage configuration":    snap(func(r *raft.InstallSnapshotRequest) { r.Configuration = []byte{0xc1, 0x01, 0x02} }),
		"no configuration":         snap(func(r *raft.InstallSnapshotRequest) { r.Configuration = nil }),
		"index zero":               snap(func(r *raft.InstallSnapshotRequest) { r.LastLogIndex = 0 }),
		"term above request":       snap(func(r *raft.InstallSnapshotRequest) { r.LastLogTerm = term + 1 }),
		"configuration after last": snap(func(r *raft.InstallSnapshotRequest) { r.ConfigurationIndex = 2000 }),
	}
}

// malformedHeaders are headers every request kind must refuse.
func malformedHeaders() map[string]raft.RPCHeader {
	return map[string]raft.RPCHeader{
		"unknown protocol version": {ProtocolVersion: raft.ProtocolVersion + 1, ID: "evil", Addr: "addr-evil"},
		"protocol version zero":    {ProtocolVersion: 0, ID: "evil", Addr: "addr-evil"},
		"empty sender ID":          {ProtocolVersion: raft.ProtocolVersion, Addr: "addr-evil"},
		"empty sender address":     {ProtocolVersion: raft.ProtocolVersion, ID: "evil"},
	}
}

// sendMalformed sends every malformed request to the node at target and checks each is
// refused with ErrBadRequest.
func sendMalformed(t *testing.T, evil *raft.InmemTransport, target raft.ServerAddress, term uint64) {
	t.Helper()
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: "evil", Addr: evil.LocalAddr()}
	expectBad := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, raft.ErrBadRequest) {
			t.Fatalf("%s to %s: got %v, want an error matching ErrBadRequest", what, target, err)
		}
	}
	for name, req := range malformedAppends(term) {
		req.RPCHeader = header
		expectBad("append entries with "+name, evil.AppendEntries("", target, req, new(raft.AppendEntriesResponse)))
	}
	for name, req := range malformedSnapshots(term) {
		req.RPCHeader = header
		err := evil.InstallSnapshot("", target, req, new(raft.InstallSnapshotResponse), bytes.NewReader([]byte("data")))
		expectBad("install snapshot with "+name, err)
	}
	for name, h := range malformedHeaders() {
		// A version outside the node's range is refused as such, before anything else.
		want := raft.ErrBadRequest
		if h.ProtocolVersion != raft.ProtocolVersion {
			want = raft.ErrUnsupportedProtocol
		}
		expect := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, want) {
				t.Fatalf("%s with %s to %s: got %v, want an error matching %v", what, name, target, err, want)
			}
		}
		expect("append entries", evil.AppendEntries("", target, &raft.AppendEntriesRequest{RPCHeader: h, Term: term}, new(raft.AppendEntriesResponse)))
		expect("request vote", evil.RequestVote("", target, &raft.RequestVoteRequest{RPCHeader: h, Term: term}, new(raft.RequestVoteResponse)))
		expect("pre-vote", evil.RequestPreVote("", target, &raft.RequestPreVoteRequest{RPCHeader: h, Term: term}, new(raft.RequestPreVoteResponse)))
		expect("timeout now", evil.TimeoutNow("", target, &raft.TimeoutNowRequest{RPCHeader: h, Term: term}, new(raft.TimeoutNowResponse)))
		snap := malformedSnapshots(term)["negative size"]
		snap.RPCHeader, snap.Size = h, 4
		expect("install snapshot", evil.InstallSnapshot("", target, snap, new(raft.InstallSnapshotResponse), bytes.NewReader([]byte("data"))))
	}
	expectBad("an unknown request type", raft.SendBogusRPC(evil, target))
}

// TestPeerInput_MalformedGetsErrorsNotPanics: malformed requests from a peer get errors,
// never a panic, on the leader and on followers: no node stops, changes term or leader, and
// the log holds only the real writes (docs/design.md, section 10).
func TestPeerInput_MalformedGetsErrorsNotPanics(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		mustApply(t, c, "before")
		evil, err := c.Net.NewTransport("addr-evil")
		if err != nil {
			t.Fatal(err)
		}
		defer evil.Close()
		term := c.Node(leader).Raft().CurrentTerm()
		for _, i := range append([]int{leader}, others(c, leader)...) {
			target := c.Node(i).Addr
			sendMalformed(t, evil, target, term+100)
			// Mismatches a correct leader can cause are answered, not refused: a previous
			// entry far beyond the log gets a plain rejection with a hint.
			var resp raft.AppendEntriesResponse
			req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: "evil", Addr: "addr-evil"},
				Term: term - 1, PrevLogIndex: 1 << 40, PrevLogTerm: term - 1}
			if err := evil.AppendEntries("", target, req, &resp); err != nil || resp.Success || resp.Term != term {
				t.Fatalf("stale append far beyond the log to node %d: %+v, %v; want a rejection in term %d", i, resp, err, term)
			}
			// A well-formed request of the current term that would overwrite a committed
			// entry (or come from a second leader) is refused.
			req = &raft.AppendEntriesRequest{RPCHeader: req.RPCHeader, Term: term,
				Entries: []*raft.Log{{Index: 1, Term: term, Type: raft.LogCommand, Data: []byte("evil")}}}
			if err := evil.AppendEntries("", target, req, &resp); !errors.Is(err, raft.ErrBadRequest) {
				t.Fatalf("overwriting committed entry 1 on node %d: %v, want ErrBadRequest", i, err)
			}
		}
		for i, n := range c.Nodes() {
			r := n.Raft()
			if r.State() == raft.Shutdown || r.ShutdownCause() != nil {
				t.Fatalf("node %d stopped: %v", i, r.ShutdownCause())
			}
			if got := r.CurrentTerm(); got != term {
				t.Fatalf("node %d moved from term %d to %d on malformed requests", i, term, got)
			}
		}
		if got := c.Leader(); got != leader {
			t.Fatalf("leader changed from %d to %d on malformed requests", leader, got)
		}
		g := mustApply(t, c, "after")
		c.WaitApplied(g.Index(), waitLong)
		for i := range c.Nodes() {
			if got := recorded(c, i); len(got) != 2 || got[0] != "before" || got[1] != "after" {
				t.Fatalf("node %d applied %v, want [before after]", i, got)
			}
		}
		c.CheckSafety()
	})
}
