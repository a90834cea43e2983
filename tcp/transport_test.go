package tcp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/internal/testnet"
)

func header(id string) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: raft.ServerID(id), Addr: raft.ServerAddress(id + ":7000")}
}

// TestTransport_RoundTripsEveryRPC sends each RPC type with every field set and checks that
// the receiver sees exactly the request and the caller exactly the response.
func TestTransport_RoundTripsEveryRPC(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{})
	snapshot := bytes.Repeat([]byte("snapshot-data-"), 10000)
	ae := &raft.AppendEntriesRequest{RPCHeader: header("a"), Term: 7, PrevLogIndex: 41, PrevLogTerm: 6,
		Entries: []*raft.Log{
			{Index: 42, Term: 6, Type: raft.LogCommand, Data: []byte("x"), Extensions: []byte("ext")},
			{Index: 43, Term: 7, Type: raft.LogConfiguration, Data: []byte("conf")},
			{Index: 44, Term: 7, Type: raft.LogNoop},
			{Index: 45, Term: 7, Type: raft.LogBarrier},
		}, LeaderCommitIndex: 40}
	cases := []struct {
		req, resp any
		call      func(req, resp any) error
	}{
		{ae, &raft.AppendEntriesResponse{RPCHeader: header("b"), Term: 7, Success: true, LastLogIndex: 45, ConflictTerm: 3, ConflictIndex: 9},
			func(q, p any) error {
				return client.AppendEntries("b", server.LocalAddr(), q.(*raft.AppendEntriesRequest), p.(*raft.AppendEntriesResponse))
			}},
		{&raft.RequestVoteRequest{RPCHeader: header("c"), Term: 9, LastLogIndex: 5, LastLogTerm: 4, LeadershipTransfer: true},
			&raft.RequestVoteResponse{RPCHeader: header("b"), Term: 9, Granted: true},
			func(q, p any) error {
				return client.RequestVote("b", server.LocalAddr(), q.(*raft.RequestVoteRequest), p.(*raft.RequestVoteResponse))
			}},
		{&raft.RequestPreVoteRequest{RPCHeader: header("c"), Term: 10, LastLogIndex: 5, LastLogTerm: 4},
			&raft.RequestPreVoteResponse{RPCHeader: header("b"), Term: 9, Granted: true},
			func(q, p any) error {
				return client.RequestPreVote("b", server.LocalAddr(), q.(*raft.RequestPreVoteRequest), p.(*raft.RequestPreVoteResponse))
			}},
		{&raft.InstallSnapshotRequest{RPCHeader: header("a"), SnapshotVersion: 1, Term: 7, LastLogIndex: 100, LastLogTerm: 6,
			Configuration: []byte("configuration"), ConfigurationIndex: 90, Size: int64(len(snapshot))},
			&raft.InstallSnapshotResponse{RPCHeader: header("b"), Term: 7, Success: true},
			func(q, p any) error {
				return client.InstallSnapshot("b", server.LocalAddr(), q.(*raft.InstallSnapshotRequest), p.(*raft.InstallSnapshotResponse), bytes.NewReader(snapshot))
			}},
		{&raft.TimeoutNowRequest{RPCHeader: header("a"), Term: 7}, &raft.TimeoutNowResponse{RPCHeader: header("b"), Term: 7},
			func(q, p any) error {
				return client.TimeoutNow("b", server.LocalAddr(), q.(*raft.TimeoutNowRequest), p.(*raft.TimeoutNowResponse))
			}},
	}
	var gotBody []byte
	var respond any
	node := startNode(t, server, func(rpc raft.RPC) {
		if rpc.Reader != nil {
			gotBody, _ = io.ReadAll(rpc.Reader)
		}
		rpc.Respond(respond, nil)
	})
	for i, c := range cases {
		respond = c.resp
		resp := reflect.New(reflect.TypeOf(c.resp).Elem()).Interface()
		if err := c.call(c.req, resp); err != nil {
			t.Fatalf("%T: %v", c.req, err)
		}
		if got := node.received()[i]; !reflect.DeepEqual(got, c.req) {
			t.Errorf("%T: node got %+v, want %+v", c.req, got, c.req)
		}
		if !reflect.DeepEqual(resp, c.resp) {
			t.Errorf("%T: caller got %+v, want %+v", c.req, resp, c.resp)
		}
	}
	if !bytes.Equal(gotBody, snapshot) {
		t.Errorf("snapshot body: got %d bytes, want %d", len(gotBody), len(snapshot))
	}
}

// TestTransport_ReceivedEntriesDoNotAlias checks that a request handed to the node keeps its
// contents after the connection reads the next frame into the same buffer.
func TestTransport_ReceivedEntriesDoNotAlias(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{})
	node := startNode(t, server, nil)
	mustAppend(t, client, server, appendReq(1, 0, 3, 64))
	mustAppend(t, client, server, appendReq(1, 3, 3, 64))
	first := node.received()[0].(*raft.AppendEntriesRequest)
	if want := appendReq(1, 0, 3, 64); !reflect.DeepEqual(first, want) {
		t.Fatalf("first request changed after the second arrived: %+v", first.Entries[0])
	}
}

// TestTransport_RemoteErrorCrossesTheWire checks that an error answer reaches the caller
// matching the raft sentinel and that the connection stays in the pool.
func TestTransport_RemoteErrorCrossesTheWire(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{})
	var fail atomic.Bool
	fail.Store(true)
	startNode(t, server, func(rpc raft.RPC) {
		if fail.Load() {
			rpc.Respond(nil, &raft.NotLeaderError{LeaderID: "n2", LeaderAddress: "127.0.0.1:2"})
			return
		}
		echo(rpc)
	})
	var resp raft.RequestVoteResponse
	err := client.RequestVote("s", server.LocalAddr(), &raft.RequestVoteRequest{Term: 3}, &resp)
	var remote *RemoteError
	if !errors.As(err, &remote) || !errors.Is(err, ErrRemote) || !errors.Is(err, raft.ErrNotLeader) {
		t.Fatalf("err = %v, want a RemoteError matching raft.ErrNotLeader", err)
	}
	if errors.Is(err, raft.ErrBadRequest) {
		t.Fatalf("err %v must not match an unrelated sentinel", err)
	}
	fail.Store(false)
	mustAppend(t, client, server, appendReq(3, 0, 1, 8))
	if n := inboundCount(server); n != 1 {
		t.Fatalf("server has %d inbound connections, want the one reused", n)
	}
}

// TestTransport_ReusesPooledConnections checks that sequential calls share one connection and
// that the idle pool never grows past MaxPool.
func TestTransport_ReusesPooledConnections(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{MaxPool: 2})
	startNode(t, server, nil)
	for i := 0; i < 20; i++ {
		mustAppend(t, client, server, appendReq(1, uint64(i), 1, 16))
	}
	if n := inboundCount(server); n != 1 {
		t.Fatalf("20 sequential calls used %d connections, want 1", n)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp raft.AppendEntriesResponse
			if err := client.AppendEntries("s", server.LocalAddr(), appendReq(1, 0, 1, 16), &resp); err != nil {
				t.Errorf("AppendEntries: %v", err)
			}
		}()
	}
	wg.Wait()
	client.mu.Lock()
	idle := len(client.idle[poolKey{target: server.LocalAddr()}])
	client.mu.Unlock()
	if idle > 2 {
		t.Fatalf("%d idle connections pooled, want at most MaxPool=2", idle)
	}
}

// TestTransport_ConcurrentCallsMatchTheirResponses runs many goroutines making mixed calls and
// checks each caller gets the answer to its own request.
func TestTransport_ConcurrentCallsMatchTheirResponses(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{})
	startNode(t, server, nil)
	const goroutines, calls = 16, 40
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				if err := oneCall(client, server.LocalAddr(), uint64(g*1000+i), i%3); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// oneCall makes one call of the given kind and checks the echoed term.
func oneCall(client *Transport, target raft.ServerAddress, term uint64, kind int) error {
	var got uint64
	var err error
	switch kind {
	case 0:
		var resp raft.AppendEntriesResponse
		err = client.AppendEntries("s", target, appendReq(term, term, 2, 32), &resp)
		if err == nil && resp.LastLogIndex != term+2 {
			return fmt.Errorf("append %d answered with last index %d", term, resp.LastLogIndex)
		}
		got = resp.Term
	case 1:
		var resp raft.AppendEntriesResponse
		err = client.AppendEntries("s", target, appendReq(term, 0, 0, 0), &resp)
		got = resp.Term
	default:
		var resp raft.RequestVoteResponse
		err = client.RequestVote("s", target, &raft.RequestVoteRequest{Term: term}, &resp)
		got = resp.Term
	}
	if err == nil && got != term {
		err = fmt.Errorf("call with term %d answered with term %d", term, got)
	}
	return err
}

// TestTransport_RequestTimesOut checks that a peer that never answers costs the caller at
// most about Timeout.
func TestTransport_RequestTimesOut(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{Timeout: 200 * time.Millisecond})
	startNode(t, server, func(raft.RPC) {}) // never answers
	start := time.Now()
	var resp raft.AppendEntriesResponse
	err := client.AppendEntries("s", server.LocalAddr(), appendReq(1, 0, 1, 8), &resp)
	took := time.Since(start)
	if !isTimeout(err) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if took > 2*time.Second {
		t.Fatalf("timed out after %s, want about 200ms", took)
	}
}

// TestTransport_HeartbeatDoesNotWaitBehindLargeRequests holds a large AppendEntries and a
// snapshot stream in the middle of their transfer and checks heartbeats still go through.
func TestTransport_HeartbeatDoesNotWaitBehindLargeRequests(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{MaxPool: 1})
	release := make(chan struct{})
	startNode(t, server, func(rpc raft.RPC) {
		if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && len(req.Entries) > 0 {
			go func() { // answers once the test releases it
				<-release
				echo(rpc)
			}()
			return
		}
		echo(rpc)
	})
	big := goCall(func() error {
		var resp raft.AppendEntriesResponse
		return client.AppendEntries("s", server.LocalAddr(), appendReq(2, 0, 512, 4096), &resp)
	})
	pr, pw := io.Pipe()
	snap := goCall(func() error {
		var resp raft.InstallSnapshotResponse
		return client.InstallSnapshot("s", server.LocalAddr(), &raft.InstallSnapshotRequest{Term: 2, Size: 1 << 20}, &resp, pr)
	})
	if _, err := pw.Write(make([]byte, 1000)); err != nil { // the stream has started and now stalls
		t.Fatal(err)
	}
	waitFor(t, "the large request and the snapshot to arrive", func() bool { return inboundCount(server) == 2 })
	for i := 0; i < 5; i++ {
		hb := goCall(func() error {
			var resp raft.AppendEntriesResponse
			return client.AppendEntries("s", server.LocalAddr(), appendReq(2, 0, 0, 0), &resp)
		})
		if r := await(t, hb, waitTimeout); r.err != nil {
			t.Fatalf("heartbeat: %v", r.err)
		}
	}
	close(release)
	pw.CloseWithError(errors.New("test: snapshot source failed"))
	if r := await(t, big, waitTimeout); r.err != nil {
		t.Fatalf("large AppendEntries: %v", r.err)
	}
	if r := await(t, snap, waitTimeout); r.err == nil {
		t.Fatal("snapshot with a failed source succeeded")
	}
}

// TestTransport_SnapshotIsStreamed sends a snapshot much larger than anything the transport
// buffers and checks the allocations stay far below its size, and that a receiver reading
// only part of it leaves no connection behind (snapshot connections are never pooled).
func TestTransport_SnapshotIsStreamed(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{})
	const size = 64 << 20
	var read int64
	startNode(t, server, func(rpc raft.RPC) {
		if rpc.Reader != nil {
			read, _ = io.Copy(io.Discard, io.LimitReader(rpc.Reader, size/2))
		}
		echo(rpc)
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var resp raft.InstallSnapshotResponse
	err := client.InstallSnapshot("s", server.LocalAddr(), &raft.InstallSnapshotRequest{Term: 4, Size: size}, &resp, io.LimitReader(zeroReader{}, size))
	runtime.ReadMemStats(&after)
	if err != nil || !resp.Success {
		t.Fatalf("InstallSnapshot: %v, %+v", err, resp)
	}
	if read != size/2 {
		t.Fatalf("receiver read %d bytes, want %d", read, size/2)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/8 {
		t.Fatalf("a %d MiB snapshot allocated %d MiB", size>>20, alloc>>20)
	}
	// The snapshot's connection was dialled for it alone and closed by the client; the
	// server drops it once it read the close, and keeps only the append's connection.
	mustAppend(t, client, server, appendReq(4, 0, 1, 8))
	waitFor(t, "the server to drop the snapshot's connection and keep the append's", func() bool {
		return inboundCount(server) == 1
	})
}

// zeroReader is an endless source of zero bytes.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestTransport_ShortSnapshotSourceFails checks that a data reader shorter than Size fails the
// call and does not poison the pool.
func TestTransport_ShortSnapshotSourceFails(t *testing.T) {
	server, _ := newTestTransport(t, Options{Timeout: time.Second})
	client, _ := newTestTransport(t, Options{})
	startNode(t, server, func(rpc raft.RPC) {
		if rpc.Reader != nil {
			io.Copy(io.Discard, rpc.Reader)
		}
		echo(rpc)
	})
	var resp raft.InstallSnapshotResponse
	err := client.InstallSnapshot("s", server.LocalAddr(), &raft.InstallSnapshotRequest{Size: 100}, &resp, bytes.NewReader(make([]byte, 60)))
	if !errors.Is(err, ErrShortSnapshot) {
		t.Fatalf("err = %v, want ErrShortSnapshot", err)
	}
	err = client.InstallSnapshot("s", server.LocalAddr(), &raft.InstallSnapshotRequest{Size: -1}, &resp, bytes.NewReader(nil))
	if !errors.Is(err, raft.ErrBadRequest) {
		t.Fatalf("negative size: err = %v, want raft.ErrBadRequest", err)
	}
	mustAppend(t, client, server, appendReq(1, 0, 1, 8))
}

// TestTransport_CloseWhileCallsInFlight closes the calling transport while its calls wait on
// a silent peer, and checks they all return promptly with ErrTransportShutdown.
func TestTransport_CloseWhileCallsInFlight(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{Timeout: time.Minute})
	node := startNode(t, server, func(raft.RPC) {}) // never answers
	var calls []<-chan errResult
	for i := 0; i < 8; i++ {
		calls = append(calls, goCall(func() error {
			return oneCall(client, server.LocalAddr(), uint64(i+1), i%3)
		}))
	}
	pipe, err := client.AppendEntriesPipeline("s", server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	fut, err := pipe.AppendEntries(appendReq(1, 0, 1, 8), new(raft.AppendEntriesResponse))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every call to reach the node", func() bool { return node.count() == 9 })
	client.Close()
	for _, ch := range calls {
		if r := await(t, ch, 2*time.Second); !errors.Is(r.err, raft.ErrTransportShutdown) {
			t.Fatalf("in-flight call returned %v, want ErrTransportShutdown", r.err)
		}
	}
	if err := await(t, goCall(fut.Error), 2*time.Second).err; err == nil {
		t.Fatal("pipelined request succeeded after Close")
	}
	if err := oneCall(client, server.LocalAddr(), 1, 0); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("call after Close returned %v, want ErrTransportShutdown", err)
	}
	if _, err := client.AppendEntriesPipeline("s", server.LocalAddr()); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("pipeline after Close returned %v, want ErrTransportShutdown", err)
	}
}

// TestTransport_ServerCloseFailsCallers closes the answering transport under waiting callers
// and checks they fail promptly instead of waiting for their timeout.
func TestTransport_ServerCloseFailsCallers(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{Timeout: time.Minute})
	node := startNode(t, server, func(raft.RPC) {})
	call := goCall(func() error { return oneCall(client, server.LocalAddr(), 1, 0) })
	waitFor(t, "the call to reach the node", func() bool { return node.count() == 1 })
	server.Close()
	if r := await(t, call, 2*time.Second); r.err == nil {
		t.Fatal("call succeeded although the server closed")
	}
}

// TestTransport_RefusesOversizedRequestLocally checks that a request above MaxFrameBytes fails
// before anything is sent and leaves the connection usable.
func TestTransport_RefusesOversizedRequestLocally(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	client, _ := newTestTransport(t, Options{MaxFrameBytes: 64 << 10})
	startNode(t, server, nil)
	var resp raft.AppendEntriesResponse
	err := client.AppendEntries("s", server.LocalAddr(), appendReq(1, 0, 100, 1024), &resp)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	mustAppend(t, client, server, appendReq(1, 0, 10, 1024))
}

// TestOptions_Validation checks defaults and the rejection of bad values.
func TestOptions_Validation(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil || o.MaxPool != DefaultMaxPool || o.Timeout != DefaultTimeout || o.MaxFrameBytes != DefaultMaxFrameBytes ||
		o.MaxInboundConns != DefaultMaxInboundConns || o.Logger == nil {
		t.Fatalf("defaults = %+v, %v", o, err)
	}
	for _, bad := range []Options{{MaxPool: -1}, {Timeout: -time.Second}, {MaxFrameBytes: 100}, {MaxFrameBytes: 1 << 33}} {
		if _, err := bad.withDefaults(); !errors.Is(err, raft.ErrInvalidConfig) {
			t.Errorf("%+v: err = %v, want ErrInvalidConfig", bad, err)
		}
	}
	if _, err := NewTransport("0.0.0.0:0", nil, Options{}); !errors.Is(err, ErrNotAdvertisable) {
		t.Errorf("unspecified bind address: err = %v, want ErrNotAdvertisable", err)
	}
	d := o.snapshotDeadline(time.Unix(0, 0), 3<<20).Sub(time.Unix(0, 0))
	if d != DefaultTimeout+3*time.Second {
		t.Errorf("snapshot budget for 3 MiB = %s, want Timeout + 3s", d)
	}
	if d := o.snapshotDeadline(time.Unix(0, 0), 1<<62).Sub(time.Unix(0, 0)); d != DefaultTimeout+maxSnapshotBudget {
		t.Errorf("snapshot budget for a huge size = %s, want the cap", d)
	}
}

// seededRand returns a PRNG from a fixed seed, logging it for replay.
func seededRand(t testing.TB, seed int64) *rand.Rand {
	t.Logf("seed %d", seed)
	return rand.New(rand.NewSource(seed))
}

// TestTransport_AdvertisesAHostName checks that a HostAddr is advertised exactly as given and
// that a peer reaches the transport through the name.
func TestTransport_AdvertisesAHostName(t *testing.T) {
	var server *Transport
	for attempt := 1; server == nil; attempt++ {
		_, port, _ := net.SplitHostPort(testnet.FreeLoopbackAddrs(t, 1)[0])
		logger, _ := testLogger(t.Name())
		trans, err := NewTransport("127.0.0.1:"+port, HostAddr("localhost:"+port), Options{Logger: logger})
		switch {
		case err == nil:
			server = trans
			t.Cleanup(func() { trans.Close() })
		case errors.Is(err, syscall.EADDRINUSE) && attempt < 3:
			t.Logf("port %s was taken before the bind; trying another", port)
		default:
			t.Fatalf("NewTransport: %v", err)
		}
	}
	if !strings.HasPrefix(string(server.LocalAddr()), "localhost:") {
		t.Fatalf("LocalAddr = %q, want the advertised localhost:PORT", server.LocalAddr())
	}
	client, _ := newTestTransport(t, Options{})
	startNode(t, server, nil)
	mustAppend(t, client, server, appendReq(1, 0, 1, 16))
}

// TestCheckAdvertisable lists the addresses a transport may and may not advertise.
func TestCheckAdvertisable(t *testing.T) {
	for _, good := range []net.Addr{
		HostAddr("node1:7000"), HostAddr("raft-0.raft.example.svc:7000"), HostAddr("10.0.0.5:7000"),
		HostAddr("[fe80::1%eth0]:7000"), &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 7000},
		&net.TCPAddr{IP: net.IPv6loopback, Port: 7000},
	} {
		if err := checkAdvertisable(good); err != nil {
			t.Errorf("%s: %v, want accepted", good, err)
		}
	}
	for _, bad := range []net.Addr{
		HostAddr("node1"), HostAddr("node1:0"), HostAddr("node1:http"), HostAddr("node1:70000"),
		HostAddr(":7000"), HostAddr("0.0.0.0:7000"), HostAddr("[::]:7000"),
		&net.TCPAddr{Port: 7000}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5)},
		&net.UDPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 7000},
	} {
		if err := checkAdvertisable(bad); !errors.Is(err, ErrNotAdvertisable) {
			t.Errorf("%s: err = %v, want ErrNotAdvertisable", bad, err)
		}
	}
	if _, err := NewTransport("127.0.0.1:0", HostAddr("node1:0"), Options{}); !errors.Is(err, ErrNotAdvertisable) {
		t.Errorf("advertising port 0: err = %v, want ErrNotAdvertisable", err)
	}
}
