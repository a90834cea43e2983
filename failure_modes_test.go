package raft_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

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

// TestAppendEntries_HigherTermPersistsTermBeforeResponding: a heartbeat or an append of a
// higher term makes the follower persist the new term before it answers (docs/design.md,
// section 6).
func TestAppendEntries_HigherTermPersistsTermBeforeResponding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSoloNode(t)
		cases := []struct {
			name string
			req  *raft.AppendEntriesRequest
		}{
			{"heartbeat", &raft.AppendEntriesRequest{Term: 7}},
			{"append", &raft.AppendEntriesRequest{Term: 9, PrevLogIndex: 1, PrevLogTerm: 1,
				Entries: []*raft.Log{{Index: 2, Term: 9, Type: raft.LogCommand, Data: []byte("x")}}}},
		}
		for _, tc := range cases {
			open := n.stable.arm()
			type result struct {
				resp *raft.AppendEntriesResponse
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := n.send(tc.req)
				done <- result{resp, err}
			}()
			// Every goroutine is now blocked: the node's handler must be the one waiting
			// inside the term write, with nothing answered or published yet.
			synctest.Wait()
			select {
			case res := <-done:
				t.Fatalf("%s: answered (%+v, %v) while the new term was not yet persisted", tc.name, res.resp, res.err)
			default:
			}
			if got := n.r.CurrentTerm(); got >= tc.req.Term {
				t.Fatalf("%s: term %d published before it was persisted", tc.name, got)
			}
			open()
			res := <-done
			if res.err != nil || !res.resp.Success || res.resp.Term != tc.req.Term {
				t.Fatalf("%s: response %+v, error %v; want success in term %d", tc.name, res.resp, res.err, tc.req.Term)
			}
			if got := n.storedTerm(t); got != tc.req.Term {
				t.Fatalf("%s: stored term %d after the response, want %d", tc.name, got, tc.req.Term)
			}
		}
		if _, id := n.r.LeaderWithID(); id != "fake" || n.r.State() != raft.Follower {
			t.Fatalf("node is %v following %q, want a follower of the fake leader", n.r.State(), id)
		}
		if last := n.r.LastIndex(); last != 2 {
			t.Fatalf("last index %d, want 2", last)
		}
	})
}

// canonicalLog is the fake leader's log: the bootstrap entry, then entries 2..n of term 3 up
// to index 100 and of term 5 after.
func canonicalLog(t *testing.T, store raft.LogStore, n uint64) []*raft.Log {
	t.Helper()
	first := new(raft.Log)
	if err := store.GetLog(1, first); err != nil {
		t.Fatal(err)
	}
	logs := []*raft.Log{nil, first}
	for i := uint64(2); i <= n; i++ {
		term := uint64(3)
		if i > 100 {
			term = 5
		}
		logs = append(logs, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "cmd-%d", i)})
	}
	return logs
}

// appendWindows sends random, overlapping, out-of-order windows of the canonical log until
// the node holds all of it, pausing up to 2ms between requests so they interleave with the
// heartbeats. It reports false if that takes more than maxRequests requests.
func appendWindows(n *soloNode, canon []*raft.Log, term *atomic.Uint64, rng *rand.Rand, maxRequests int) bool {
	last := uint64(len(canon) - 1)
	for i := 0; i < maxRequests; i++ {
		have := n.r.LastIndex()
		if have >= last {
			return true
		}
		lo := max(int(have)-20, 0)
		prev := uint64(lo + rng.Intn(int(have)+6-lo))
		prev = min(prev, last-1)
		end := min(prev+1+uint64(rng.Intn(16)), last)
		req := &raft.AppendEntriesRequest{Term: term.Load(), PrevLogIndex: prev, LeaderCommitIndex: last}
		if prev > 0 {
			req.PrevLogTerm = canon[prev].Term
		}
		req.Entries = canon[prev+1 : end+1]
		_, _ = n.send(req) // rejections and stale-term answers are expected
		timer := time.NewTimer(time.Duration(rng.Intn(2000)) * time.Microsecond)
		<-timer.C
	}
	return n.r.LastIndex() >= last
}

// TestAppendEntries_ConcurrentHeartbeatsAndAppendsKeepLogIntact: heartbeats (one of which
// raises the term) racing with appends of overlapping windows of one log leave the follower
// with exactly that log, applied in order, and the new term stored (docs/design.md,
// section 3).
func TestAppendEntries_ConcurrentHeartbeatsAndAppendsKeepLogIntact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSoloNode(t)
		seed := testSeed(t)
		const last = 300
		canon := canonicalLog(t, n.logs, last)
		var term atomic.Uint64
		term.Store(5)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			heartbeatUntil(n, &term, stop)
		}()
		ok := make([]bool, 4)
		for i := range ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok[i] = appendWindows(n, canon, &term, rand.New(rand.NewSource(seed+int64(i))), 20000)
			}()
		}
		raftest.Eventually(time.Minute, func() bool { return n.r.LastIndex() >= last })
		close(stop)
		wg.Wait()
		for i, done := range ok {
			if !done {
				t.Fatalf("appender %d did not bring the log to %d (at %d)", i, last, n.r.LastIndex())
			}
		}
		// One consistent request tells the node that everything is committed.
		resp, err := n.send(&raft.AppendEntriesRequest{Term: 6, PrevLogIndex: last, PrevLogTerm: 5, LeaderCommitIndex: last})
		if err != nil || !resp.Success {
			t.Fatalf("final commit request: %+v, %v", resp, err)
		}
		if !raftest.Eventually(time.Second, func() bool { return n.r.AppliedIndex() == last }) {
			t.Fatalf("applied index %d, want %d", n.r.AppliedIndex(), last)
		}
		checkLogEquals(t, n.logs, canon)
		checkAppliedEquals(t, n.fsm, canon[2:])
		if n.r.CurrentTerm() != 6 || n.storedTerm(t) != 6 {
			t.Fatalf("term %d (stored %d), want 6", n.r.CurrentTerm(), n.storedTerm(t))
		}
	})
}

// heartbeatUntil sends the fake leader's heartbeats every millisecond until stop closes; the
// 20th moves the fake leader to term 6.
func heartbeatUntil(n *soloNode, term *atomic.Uint64, stop <-chan struct{}) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for beats := 1; ; beats++ {
		if beats == 20 {
			term.Store(6)
		}
		_, _ = n.send(&raft.AppendEntriesRequest{Term: term.Load()})
		select {
		case <-tick.C:
		case <-stop:
			return
		}
	}
}

// checkAppliedEquals fails unless fsm applied exactly the commands want, in order.
func checkAppliedEquals(t *testing.T, fsm *raftest.RecordingFSM, want []*raft.Log) {
	t.Helper()
	applied := fsm.Entries()
	if len(applied) != len(want) {
		t.Fatalf("FSM applied %d commands, want %d", len(applied), len(want))
	}
	for i, e := range applied {
		w := want[i]
		if e.Index != w.Index || e.Term != w.Term || !bytes.Equal(e.Data, w.Data) {
			t.Fatalf("FSM entry %d is %d/%d/%q, want %d/%d/%q", i, e.Index, e.Term, e.Data, w.Index, w.Term, w.Data)
		}
	}
}

// checkLogEquals fails unless store holds exactly canon[1:].
func checkLogEquals(t *testing.T, store raft.LogStore, canon []*raft.Log) {
	t.Helper()
	first, _ := store.FirstIndex()
	lastIndex, _ := store.LastIndex()
	if first != 1 || lastIndex != uint64(len(canon)-1) {
		t.Fatalf("log holds [%d, %d], want [1, %d]", first, lastIndex, len(canon)-1)
	}
	for i := uint64(1); i <= lastIndex; i++ {
		var got raft.Log
		if err := store.GetLog(i, &got); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		want := canon[i]
		if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("entry %d is %d/%d/%v/%q, want %d/%d/%v/%q", i, got.Index, got.Term, got.Type, got.Data,
				want.Index, want.Term, want.Type, want.Data)
		}
	}
}

// slowLeaseOptions keep a cut-off leader leading for seconds: it cannot commit, yet it does
// not step down within the test's timeouts.
func slowLeaseOptions() raftest.Options {
	return raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		c.HeartbeatTimeout = 5 * time.Second
		c.ElectionTimeout = 5 * time.Second
		c.LeaderLeaseTimeout = 5 * time.Second
	}}
}

// requireElapsed fails unless d is within [want, want+10ms].
func requireElapsed(t *testing.T, what string, d, want time.Duration) {
	t.Helper()
	if d < want || d > want+10*time.Millisecond {
		t.Fatalf("%s took %v, want %v", what, d, want)
	}
}

// TestApply_TimeoutBoundsTheWholeWait: an Apply's timeout bounds the whole wait, commit
// included, not only the hand-over to the main loop (docs/design.md, section 3).
func TestApply_TimeoutBoundsTheWholeWait(t *testing.T) {
	raftest.Run(t, slowLeaseOptions(), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(time.Minute)
		r := c.Node(leader).Raft()
		mustApply(t, c, "warm-up")
		c.Isolate(leader)

		start := time.Now()
		err := r.Apply([]byte("cut-off"), 200*time.Millisecond).Error()
		if !errors.Is(err, raft.ErrTimeout) || errors.Is(err, raft.ErrEnqueueTimeout) {
			t.Fatalf("apply on a leader that cannot commit: %v, want ErrTimeout", err)
		}
		requireElapsed(t, "the timed-out apply", time.Since(start), 200*time.Millisecond)

		ctx, cancel := context.WithCancel(context.Background())
		f := r.ApplyContext(ctx, []byte("cancelled-after-enqueue"))
		cancel()
		if err := f.Error(); !errors.Is(err, context.Canceled) || !errors.Is(err, raft.ErrTimeout) {
			t.Fatalf("apply cancelled after it was queued: %v, want context.Canceled and ErrTimeout", err)
		}

		ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start = time.Now()
		if err := r.ApplyContext(ctx, []byte("deadline")).Error(); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, raft.ErrTimeout) {
			t.Fatalf("apply past its context deadline: %v, want context.DeadlineExceeded and ErrTimeout", err)
		}
		requireElapsed(t, "the apply with a context deadline", time.Since(start), 300*time.Millisecond)

		done, cancelDone := context.WithCancel(context.Background())
		cancelDone()
		if err := r.ApplyContext(done, []byte("never-queued")).Error(); !errors.Is(err, context.Canceled) || !errors.Is(err, raft.ErrEnqueueTimeout) {
			t.Fatalf("apply with a context cancelled beforehand: %v, want context.Canceled and ErrEnqueueTimeout (not applied)", err)
		}
		if r.State() != raft.Leader {
			t.Fatalf("leader stepped down (%v) within its lease; the test needs it to keep leading", r.State())
		}

		c.Heal()
		g := mustApply(t, c, "healed")
		c.WaitApplied(g.Index(), waitLong)
		for i := range c.Nodes() {
			if countOf(c, i, "never-queued") != 0 {
				t.Fatalf("node %d applied a command whose apply reported it was never queued", i)
			}
		}
		c.CheckSafety()
	})
}

// backpressureOptions give every node a hangingStore, an unbuffered apply queue and a
// leader that takes no more applies once four entries wait for its (hung) disk.
func backpressureOptions(lease time.Duration) raftest.Options {
	return withHangingStores(raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		c.BatchApplyCh = false
		c.MaxAppendEntries = 1
		c.LogStoreTimeout = time.Hour
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = lease, lease, lease
	}})
}

// fillApplyQueue hangs the leader's disk and applies until one apply cannot be queued; it
// returns that command, which reported ErrEnqueueTimeout after exactly its timeout.
func fillApplyQueue(t *testing.T, c *raftest.Cluster, leader int) string {
	t.Helper()
	r := c.Node(leader).Raft()
	hangingStoreOf(t, c, leader).Hang()
	for i := 0; i < 20; i++ {
		cmd := fmt.Sprintf("cmd-%d", i)
		start := time.Now()
		err := r.Apply([]byte(cmd), 200*time.Millisecond).Error()
		switch {
		case errors.Is(err, raft.ErrEnqueueTimeout):
			requireElapsed(t, "the apply that could not be queued", time.Since(start), 200*time.Millisecond)
			return cmd
		case err != nil && !errors.Is(err, raft.ErrTimeout):
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	t.Fatal("no apply reported ErrEnqueueTimeout although the leader stopped taking applies")
	return ""
}

// TestApply_CannotEnqueueReportsEnqueueTimeout: an Apply that cannot even be handed to a
// leader whose queue is full fails with ErrEnqueueTimeout, and the node serves again once the
// disk is back (docs/design.md, sections 3 and 4).
func TestApply_CannotEnqueueReportsEnqueueTimeout(t *testing.T) {
	raftest.Run(t, backpressureOptions(100*time.Millisecond), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		mustApply(t, c, "warm-up")
		store := hangingStoreOf(t, c, leader)
		rejected := fillApplyQueue(t, c, leader)
		if r.State() != raft.Leader {
			t.Fatalf("leader is %v; the test needs it to keep leading", r.State())
		}
		store.Release()
		g := mustApply(t, c, "released")
		c.WaitApplied(g.Index(), waitLong)
		for i := range c.Nodes() {
			if countOf(c, i, rejected) != 0 {
				t.Fatalf("node %d applied %q, whose apply reported ErrEnqueueTimeout (not applied)", i, rejected)
			}
		}
		c.CheckSafety()
	})
}

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

// TestApply_TimeoutCountsTimeSpentQueueing: an Apply's timeout runs from the call, so time
// spent waiting to be queued counts (docs/design.md, section 3).
func TestApply_TimeoutCountsTimeSpentQueueing(t *testing.T) {
	raftest.Run(t, backpressureOptions(5*time.Second), func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(time.Minute)
		r := c.Node(leader).Raft()
		mustApply(t, c, "warm-up")
		c.Isolate(leader) // nothing commits; the long lease keeps it leading
		fillApplyQueue(t, c, leader)
		// The disk comes back 100ms into the next apply's 200ms: it is queued then, cannot
		// commit, and must still fail 200ms after the call, not 200ms after it was queued.
		releaser := time.AfterFunc(100*time.Millisecond, hangingStoreOf(t, c, leader).Release)
		defer releaser.Stop()
		start := time.Now()
		err := r.Apply([]byte("late"), 200*time.Millisecond).Error()
		if !errors.Is(err, raft.ErrTimeout) || errors.Is(err, raft.ErrEnqueueTimeout) {
			t.Fatalf("apply queued after 100ms that cannot commit: %v, want ErrTimeout", err)
		}
		requireElapsed(t, "the apply", time.Since(start), 200*time.Millisecond)
		if r.State() != raft.Leader {
			t.Fatalf("leader is %v; the test needs it to keep leading", r.State())
		}
	})
}

// failingStore is an InmemStore whose StoreLogs fails once Fail was called.
type failingStore struct {
	*raft.InmemStore
	failing atomic.Bool
}

var errDiskGone = errors.New("test: disk gone")

func (s *failingStore) StoreLogs(logs []*raft.Log) error {
	if s.failing.Load() {
		return errDiskGone
	}
	return s.InmemStore.StoreLogs(logs)
}

func (s *failingStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

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
