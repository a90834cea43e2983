package raft_test

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest/memnet"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// inmemServer answers the requests arriving at one transport on its own goroutine, and records
// the commands it saw.
type inmemServer struct {
	tr     *raft.InmemTransport
	handle func(raft.RPC)
	stopCh chan struct{}
	done   chan struct{}

	mu   sync.Mutex
	seen []any
}

// serveInmem starts answering tr's requests with handle (echo when nil). The returned server's
// stop must run before the test ends.
func serveInmem(tr *raft.InmemTransport, handle func(raft.RPC)) *inmemServer {
	if handle == nil {
		handle = echoRPC
	}
	s := &inmemServer{tr: tr, handle: handle, stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case rpc := <-tr.Consumer():
				s.mu.Lock()
				s.seen = append(s.seen, rpc.Command)
				s.mu.Unlock()
				s.handle(rpc)
			case <-s.stopCh:
				return
			}
		}
	}()
	return s
}

func (s *inmemServer) stop() {
	close(s.stopCh)
	<-s.done
}

func (s *inmemServer) commands() []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]any(nil), s.seen...)
}

// echoRPC answers every request with a success that echoes its term; an AppendEntries's
// LastLogIndex is PrevLogIndex plus the entries; an InstallSnapshot reads the whole body first.
func echoRPC(rpc raft.RPC) {
	switch c := rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		rpc.Respond(&raft.AppendEntriesResponse{Term: c.Term, Success: true, LastLogIndex: c.PrevLogIndex + uint64(len(c.Entries))}, nil)
	case *raft.RequestVoteRequest:
		rpc.Respond(&raft.RequestVoteResponse{Term: c.Term, Granted: true}, nil)
	case *raft.RequestPreVoteRequest:
		rpc.Respond(&raft.RequestPreVoteResponse{Term: c.Term, Granted: true}, nil)
	case *raft.TimeoutNowRequest:
		rpc.Respond(&raft.TimeoutNowResponse{Term: c.Term}, nil)
	case *raft.InstallSnapshotRequest:
		n, err := io.Copy(io.Discard, rpc.Reader)
		rpc.Respond(&raft.InstallSnapshotResponse{Term: c.Term, Success: err == nil && n == c.Size}, err)
	default:
		rpc.Respond(nil, fmt.Errorf("%w: %T", raft.ErrBadRequest, c))
	}
}

// newInmemTestNet returns a network with an open transport per address, all closed when the
// test ends.
func newInmemTestNet(t testing.TB, seed int64, addrs ...raft.ServerAddress) (*memnet.Network, []*raft.InmemTransport) {
	t.Helper()
	n := memnet.New(seed)
	trs := make([]*raft.InmemTransport, len(addrs))
	for i, a := range addrs {
		tr, err := n.NewTransport(a)
		if err != nil {
			t.Fatalf("NewTransport(%s): %v", a, err)
		}
		trs[i] = tr
		t.Cleanup(func() { tr.Close() })
	}
	return n, trs
}

// newServedPair returns a network with transports a and b, b answering with echoRPC until the
// test ends.
func newServedPair(t testing.TB, seed int64) (*memnet.Network, []*raft.InmemTransport, *inmemServer) {
	t.Helper()
	n, trs := newInmemTestNet(t, seed, "a", "b")
	srv := serveInmem(trs[1], nil)
	t.Cleanup(srv.stop) // runs before the transports close
	return n, trs, srv
}

// expectFailure runs call and checks it fails with want after exactly took: run it inside a
// synctest bubble, whose clock moves only when every goroutine waits.
func expectFailure(t *testing.T, what string, want error, took time.Duration, call func() error) {
	t.Helper()
	start := time.Now()
	if err := call(); !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
	if d := time.Since(start); d != took {
		t.Fatalf("%s failed after %v, want %v", what, d, took)
	}
}

// heartbeat sends an AppendEntries with term from tr to target.
func heartbeat(tr *raft.InmemTransport, target raft.ServerAddress, term uint64) (*raft.AppendEntriesResponse, error) {
	var resp raft.AppendEntriesResponse
	err := tr.AppendEntries("", target, &raft.AppendEntriesRequest{Term: term}, &resp)
	return &resp, err
}

func TestInmemTransport_CarriesEveryRPC(t *testing.T) {
	// In a bubble: a loaded machine cannot hold the server past the network timeout.
	synctest.Test(t, func(t *testing.T) {
		_, trs, srv := newServedPair(t, 1)
		a := trs[0]

		var ae raft.AppendEntriesResponse
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: 1, ID: "a", Addr: "a"}, Term: 3, PrevLogIndex: 7,
			Entries: []*raft.Log{{Index: 8, Term: 3, Type: raft.LogCommand, Data: []byte("x")}, {Index: 9, Term: 3, Type: raft.LogNoop}}}
		if err := a.AppendEntries("b", "b", req, &ae); err != nil || !ae.Success || ae.Term != 3 || ae.LastLogIndex != 9 {
			t.Fatalf("AppendEntries = %+v, %v", ae, err)
		}
		var rv raft.RequestVoteResponse
		if err := a.RequestVote("b", "b", &raft.RequestVoteRequest{Term: 4}, &rv); err != nil || !rv.Granted || rv.Term != 4 {
			t.Fatalf("RequestVote = %+v, %v", rv, err)
		}
		var pv raft.RequestPreVoteResponse
		if err := a.RequestPreVote("b", "b", &raft.RequestPreVoteRequest{Term: 5}, &pv); err != nil || !pv.Granted || pv.Term != 5 {
			t.Fatalf("RequestPreVote = %+v, %v", pv, err)
		}
		var tn raft.TimeoutNowResponse
		if err := a.TimeoutNow("b", "b", &raft.TimeoutNowRequest{Term: 6}, &tn); err != nil || tn.Term != 6 {
			t.Fatalf("TimeoutNow = %+v, %v", tn, err)
		}
		var is raft.InstallSnapshotResponse
		body := bytes.Repeat([]byte("snap"), 1000)
		if err := a.InstallSnapshot("b", "b", &raft.InstallSnapshotRequest{Term: 7, Size: int64(len(body))}, &is, bytes.NewReader(body)); err != nil || !is.Success || is.Term != 7 {
			t.Fatalf("InstallSnapshot = %+v, %v", is, err)
		}

		got := srv.commands()
		if len(got) != 5 {
			t.Fatalf("server saw %d requests, want 5", len(got))
		}
		gotAE, ok := got[0].(*raft.AppendEntriesRequest)
		if !ok || gotAE == req || gotAE.RPCHeader != req.RPCHeader || len(gotAE.Entries) != 2 || gotAE.Entries[0] == req.Entries[0] ||
			string(gotAE.Entries[0].Data) != "x" || gotAE.Entries[1].Type != raft.LogNoop {
			t.Fatalf("server saw %#v, want a copy of %#v", got[0], req)
		}
	})
}

func TestInmemTransport_CopiesSoNoMemoryIsShared(t *testing.T) {
	// In a bubble: a loaded machine cannot hold the server past the network timeout.
	synctest.Test(t, func(t *testing.T) {
		_, trs := newInmemTestNet(t, 1, "a", "b")
		srv := serveInmem(trs[1], func(rpc raft.RPC) {
			// A handler scribbling over its request must not reach the caller.
			c := rpc.Command.(*raft.AppendEntriesRequest)
			c.Entries[0].Data[0] = '!'
			echoRPC(rpc)
		})
		defer srv.stop()

		first := &raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 1, Term: 1, Data: []byte("first")}}}
		var resp raft.AppendEntriesResponse
		if err := trs[0].AppendEntries("b", "b", first, &resp); err != nil {
			t.Fatal(err)
		}
		if string(first.Entries[0].Data) != "first" {
			t.Fatalf("caller's data became %q", first.Entries[0].Data)
		}
		// The caller reusing its request must not reach what the handler kept, nor must the
		// transport's reused buffers.
		first.Entries[0].Data[1] = '?'
		second := &raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 2, Term: 1, Data: []byte("SECOND")}}}
		if err := trs[0].AppendEntries("b", "b", second, &resp); err != nil {
			t.Fatal(err)
		}
		kept := srv.commands()[0].(*raft.AppendEntriesRequest)
		if got := string(kept.Entries[0].Data); got != "!irst" {
			t.Fatalf("handler's first request now holds %q, want %q", got, "!irst")
		}
	})
}

func TestInmemNetwork_NewTransportReplacesOnlyClosed(t *testing.T) {
	n, trs := newInmemTestNet(t, 1, "a", "b")
	if _, err := n.NewTransport("a"); err == nil {
		t.Fatal("second open transport at a: want an error")
	}
	if _, err := n.NewTransport(""); err == nil {
		t.Fatal("empty address: want an error")
	}
	trs[0].Close()
	a2, err := n.NewTransport("a")
	if err != nil {
		t.Fatalf("restart at a: %v", err)
	}
	defer a2.Close()
	srv := serveInmem(a2, nil)
	defer srv.stop()
	if _, err := heartbeat(trs[1], "a", 1); err != nil {
		t.Fatalf("call to the restarted node: %v", err)
	}
	if _, err := heartbeat(trs[0], "b", 1); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("call from the crashed transport: %v, want ErrTransportShutdown", err)
	}
}

func TestInmemTransport_UnreachableTargetFailsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, trs := newInmemTestNet(t, 1, "a", "b")
		trs[1].Close()
		for _, target := range []raft.ServerAddress{"nowhere", "b"} {
			expectFailure(t, "call to "+string(target), raft.ErrUnknownPeer, 0, func() error {
				_, err := heartbeat(trs[0], target, 1)
				return err
			})
			expectFailure(t, "pipeline to "+string(target), raft.ErrUnknownPeer, 0, func() error {
				_, err := trs[0].AppendEntriesPipeline("", target)
				return err
			})
		}
	})
}

func TestInmemTransport_CloseFailsCallsAtOnce(t *testing.T) {
	_, trs := newInmemTestNet(t, 1, "a", "b")
	a := trs[0]
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	var rv raft.RequestVoteResponse
	var is raft.InstallSnapshotResponse
	errs := []error{
		a.RequestVote("", "b", &raft.RequestVoteRequest{}, &rv),
		a.InstallSnapshot("", "b", &raft.InstallSnapshotRequest{}, &is, bytes.NewReader(nil)),
	}
	_, err := a.AppendEntriesPipeline("", "b")
	errs = append(errs, err)
	for i, err := range errs {
		if !errors.Is(err, raft.ErrTransportShutdown) {
			t.Fatalf("call %d after Close: %v, want ErrTransportShutdown", i, err)
		}
	}
}

// heldRPCs returns a handler that takes requests and never answers them.
func heldRPCs(held chan<- raft.RPC) func(raft.RPC) {
	return func(rpc raft.RPC) { held <- rpc }
}

func TestInmemTransport_CloseReturnsInflightCalls(t *testing.T) {
	for _, closing := range []string{"caller", "target"} {
		t.Run(closing, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, trs := newInmemTestNet(t, 1, "a", "b")
				held := make(chan raft.RPC, 1) // the one request of the test
				srv := serveInmem(trs[1], heldRPCs(held))
				defer srv.stop()
				done := make(chan error)
				go func() {
					_, err := heartbeat(trs[0], "b", 1)
					done <- err
				}()
				<-held // the request is with the handler, which never answers
				closer, want := trs[0], raft.ErrTransportShutdown
				if closing == "target" {
					closer, want = trs[1], raft.ErrUnknownPeer
				}
				expectFailure(t, "in-flight call", want, 0, func() error {
					closer.Close()
					return <-done
				})
			})
		})
	}
}

func TestInmemTransport_TimesOutOnSlowReceiver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, trs := newInmemTestNet(t, 1, "a", "b", "c")
		n.SetTimeout(20 * time.Millisecond)

		call := func(target raft.ServerAddress) func() error {
			return func() error {
				_, err := heartbeat(trs[0], target, 1)
				return err
			}
		}
		// b never reads its consumer channel.
		expectFailure(t, "call to a node not reading", raft.ErrInmemTimeout, 20*time.Millisecond, call("b"))

		// c takes the request but never answers.
		held := make(chan raft.RPC, 1) // the one request of the test
		srv := serveInmem(trs[2], heldRPCs(held))
		defer srv.stop()
		expectFailure(t, "call to a handler not answering", raft.ErrInmemTimeout, 20*time.Millisecond, call("c"))
		// Answering late must not block the handler.
		late := <-held
		late.Respond(&raft.AppendEntriesResponse{}, nil)
	})
}

func TestInmemTransport_InstallSnapshotHandlerGetsLonger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, trs := newInmemTestNet(t, 1, "a", "b")
		// Simulated handler latency in virtual time: twice the network timeout.
		srv := serveInmem(trs[1], func(rpc raft.RPC) {
			<-time.After(2 * raft.DefaultInmemTimeout)
			echoRPC(rpc)
		})
		defer srv.stop()
		var resp raft.InstallSnapshotResponse
		body := []byte("snapshot")
		err := trs[0].InstallSnapshot("", "b", &raft.InstallSnapshotRequest{Term: 2, Size: int64(len(body))}, &resp, bytes.NewReader(body))
		if err != nil || !resp.Success {
			t.Fatalf("slow InstallSnapshot = %+v, %v; want success", resp, err)
		}
		if _, err := heartbeat(trs[0], "b", 1); !errors.Is(err, raft.ErrInmemTimeout) {
			t.Fatalf("slow AppendEntries: %v, want ErrInmemTimeout", err)
		}
	})
}

func TestInmemTransport_InstallSnapshotStreamIsBounded(t *testing.T) {
	// In a bubble: a loaded machine cannot hold the server past the network timeout.
	synctest.Test(t, func(t *testing.T) {
		_, trs := newInmemTestNet(t, 1, "a", "b")
		type read struct {
			data []byte
			err  error
		}
		reads := make(chan read, 1) // one per call, read by the test after the call
		kept := make(chan io.Reader, 1)
		srv := serveInmem(trs[1], func(rpc raft.RPC) {
			data, err := io.ReadAll(rpc.Reader)
			reads <- read{data, err}
			kept <- rpc.Reader
			rpc.Respond(&raft.InstallSnapshotResponse{Success: err == nil}, nil)
		})
		defer srv.stop()

		var resp raft.InstallSnapshotResponse
		// The body is longer than announced: the receiver reads exactly Size bytes.
		if err := trs[0].InstallSnapshot("", "b", &raft.InstallSnapshotRequest{Size: 5}, &resp, bytes.NewReader([]byte("12345678"))); err != nil {
			t.Fatal(err)
		}
		if r := <-reads; string(r.data) != "12345" || r.err != nil {
			t.Fatalf("receiver read %q, %v; want %q", r.data, r.err, "12345")
		}
		// After the call returned, the receiver can no longer read the caller's reader.
		if _, err := (<-kept).Read(make([]byte, 1)); !errors.Is(err, raft.ErrInmemStreamEnded) {
			t.Fatalf("read after the call: %v, want raft.ErrInmemStreamEnded", err)
		}
		// The body is shorter than announced.
		if err := trs[0].InstallSnapshot("", "b", &raft.InstallSnapshotRequest{Size: 50}, &resp, bytes.NewReader([]byte("123"))); err != nil {
			t.Fatal(err)
		}
		if r := <-reads; !errors.Is(r.err, io.ErrUnexpectedEOF) || resp.Success {
			t.Fatalf("short body: receiver got %v, response %+v; want io.ErrUnexpectedEOF", r.err, resp)
		}
		<-kept
	})
}

func TestInmemTransport_ErrorsKeepSentinels(t *testing.T) {
	// In a bubble: a loaded machine cannot hold the server past the network timeout.
	synctest.Test(t, func(t *testing.T) {
		_, trs := newInmemTestNet(t, 1, "a", "b")
		answers := make(chan error, 1) // one per call
		srv := serveInmem(trs[1], func(rpc raft.RPC) { rpc.Respond(nil, <-answers) })
		defer srv.stop()

		call := func(answer error) error {
			answers <- answer
			_, err := heartbeat(trs[0], "b", 1)
			return err
		}
		err := call(fmt.Errorf("handling: %w", &raft.NotLeaderError{LeaderID: "c", LeaderAddress: "addr-c"}))
		var nl *raft.NotLeaderError
		if !errors.Is(err, raft.ErrNotLeader) || !errors.As(err, &nl) || nl.LeaderID != "c" || nl.LeaderAddress != "addr-c" {
			t.Fatalf("not-leader answer crossed as %#v", err)
		}
		if err := call(fmt.Errorf("bad index: %w", raft.ErrBadRequest)); !errors.Is(err, raft.ErrBadRequest) || err.Error() != "bad index: "+raft.ErrBadRequest.Error() {
			t.Fatalf("bad-request answer crossed as %v", err)
		}
		if err := call(errors.New("disk on fire")); err == nil || err.Error() != "disk on fire" || errors.Is(err, raft.ErrBadRequest) {
			t.Fatalf("plain answer crossed as %v", err)
		}
	})
}

func TestInmemNetwork_CutLosesRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, trs := newInmemTestNet(t, 1, "a", "b")
		srvA, srvB := serveInmem(trs[0], nil), serveInmem(trs[1], nil)
		defer srvA.stop()
		defer srvB.stop()
		n.Cut("a", "b")
		expectFailure(t, "call over a cut link", raft.ErrInmemTimeout, raft.DefaultInmemTimeout, func() error {
			_, err := heartbeat(trs[0], "b", 1)
			return err
		})
		if got := len(srvB.commands()); got != 0 {
			t.Fatalf("b handled %d requests over a cut link", got)
		}
		// The other direction carries requests, but their responses travel a -> b.
		if _, err := heartbeat(trs[1], "a", 2); !errors.Is(err, raft.ErrInmemTimeout) || len(srvA.commands()) != 1 {
			t.Fatalf("b -> a: %v after a handled %d requests; want ErrInmemTimeout after 1", err, len(srvA.commands()))
		}
		n.Heal()
		if _, err := heartbeat(trs[0], "b", 1); err != nil {
			t.Fatalf("after Heal: %v", err)
		}
	})
}

func TestInmemNetwork_LostResponseWasHandled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, trs, srv := newServedPair(t, 1)
		n.Cut("b", "a")
		expectFailure(t, "call with a cut response link", raft.ErrInmemTimeout, raft.DefaultInmemTimeout, func() error {
			_, err := heartbeat(trs[0], "b", 9)
			return err
		})
		if got := srv.commands(); len(got) != 1 || got[0].(*raft.AppendEntriesRequest).Term != 9 {
			t.Fatalf("b handled %v, want the request once", got)
		}
		want := raft.InmemNetworkStats{Sent: 2, Delivered: 1, Dropped: 1}
		if got := n.Stats(); got != want {
			t.Fatalf("Stats = %+v, want %+v", got, want)
		}
	})
}

func TestInmemNetwork_DelaysStayWithinBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, trs, _ := newServedPair(t, 7)
		n.SetFaults("a", "b", memnet.LinkFaults{MinDelay: 5 * time.Millisecond, MaxDelay: 10 * time.Millisecond})
		n.SetFaults("b", "a", memnet.LinkFaults{MinDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond})
		seen := make(map[time.Duration]bool)
		for i := range 50 {
			start := time.Now()
			if _, err := heartbeat(trs[0], "b", uint64(i)); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			d := time.Since(start)
			if d < 6*time.Millisecond || d > 12*time.Millisecond {
				t.Fatalf("call %d took %v, want within [6ms, 12ms]", i, d)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("50 calls took only %d distinct durations: delays are not drawn", len(seen))
		}
	})
}

// dropOutcomes makes calls over links that drop 30% of messages and returns which failed.
func dropOutcomes(t *testing.T, seed int64) string {
	var out []byte
	synctest.Test(t, func(t *testing.T) {
		n, trs, _ := newServedPair(t, seed)
		n.SetDefaultFaults(memnet.LinkFaults{DropRate: 0.3})
		for i := range 100 {
			if _, err := heartbeat(trs[0], "b", uint64(i)); err != nil {
				out = append(out, 'x')
			} else {
				out = append(out, '.')
			}
		}
		st := n.Stats()
		if st.Sent != st.Delivered+st.Dropped {
			t.Fatalf("Stats %+v: every message must be delivered or dropped", st)
		}
	})
	return string(out)
}

func TestInmemNetwork_DropsFollowTheSeed(t *testing.T) {
	const seed = 42
	first, again, other := dropOutcomes(t, seed), dropOutcomes(t, seed), dropOutcomes(t, seed+1)
	if first != again {
		t.Fatalf("seed %d gave two histories:\n%s\n%s", seed, first, again)
	}
	if first == other {
		t.Fatalf("seeds %d and %d gave the same history %s", seed, seed+1, first)
	}
	// A call survives with probability 0.7*0.7 = 0.49.
	if lost := bytes.Count([]byte(first), []byte("x")); lost < 35 || lost > 70 {
		t.Fatalf("seed %d: %d of 100 calls failed, want about 51: %s", seed, lost, first)
	}
}

func TestInmemNetwork_DuplicatesAreDeliveredTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, trs, srv := newServedPair(t, 1)
		n.SetFaults("a", "b", memnet.LinkFaults{DuplicateRate: 1, MaxDelay: 5 * time.Millisecond})
		const calls = 10
		for i := range calls {
			if resp, err := heartbeat(trs[0], "b", uint64(i)); err != nil || resp.Term != uint64(i) {
				t.Fatalf("call %d = %+v, %v", i, resp, err)
			}
		}
		<-time.After(5 * time.Millisecond) // virtual time: the longest duplicate delay
		synctest.Wait()
		counts := make(map[uint64]int)
		for _, c := range srv.commands() {
			counts[c.(*raft.AppendEntriesRequest).Term]++
		}
		for i := range uint64(calls) {
			if counts[i] != 2 {
				t.Fatalf("request %d delivered %d times, want 2", i, counts[i])
			}
		}
		if st := n.Stats(); st.Duplicated != calls {
			t.Fatalf("Stats %+v: want %d duplicates", st, calls)
		}
	})
}
