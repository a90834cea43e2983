package tcp

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

// pipeSend sends n requests of one entry each, following prevIndex, on p.
func pipeSend(t *testing.T, p raft.AppendPipeline, prevIndex uint64, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := p.AppendEntries(appendReq(1, prevIndex+uint64(i), 1, 64), new(raft.AppendEntriesResponse)); err != nil {
			t.Fatalf("pipeline AppendEntries %d: %v", i, err)
		}
	}
}

// pipeCollect reads n futures from p.Consumer and checks they arrive in send order, each
// with the response to its own request.
func pipeCollect(t *testing.T, p raft.AppendPipeline, prevIndex uint64, n int) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for i := 0; i < n; i++ {
		var f raft.AppendFuture
		select {
		case f = <-p.Consumer():
		case <-timer.C:
			t.Fatalf("only %d of %d pipelined responses arrived", i, n)
		}
		if err := f.Error(); err != nil {
			t.Fatalf("future %d: %v", i, err)
		}
		if got, want := f.Request().PrevLogIndex, prevIndex+uint64(i); got != want {
			t.Fatalf("future %d is for prev index %d, want %d: out of order", i, got, want)
		}
		if f.Response().LastLogIndex != f.Request().Entries[0].Index || f.Start().IsZero() {
			t.Fatalf("future %d: response %+v does not answer its request", i, f.Response())
		}
	}
}

// openPipeline starts a server answering with handle (echo when nil) and a client with
// opts, and opens a pipeline from the client to the server, closed at the end of the test.
func openPipeline(t *testing.T, opts Options, handle func(raft.RPC)) (server, client *Transport, node *fakeNode, p raft.AppendPipeline) {
	t.Helper()
	server, _ = newTestTransport(t, Options{})
	client, _ = newTestTransport(t, opts)
	node = startNode(t, server, handle)
	p, err := client.AppendEntriesPipeline("s", server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return server, client, node, p
}

// TestPipeline_ResponsesArriveInOrder sends many more requests than the window and checks
// every response is delivered in order, matched to its request.
func TestPipeline_ResponsesArriveInOrder(t *testing.T) {
	_, _, _, p := openPipeline(t, Options{MaxPipelineInflight: 8}, nil)
	const n = 300
	collected := goCall(func() error { pipeCollect(t, p, 0, n); return nil })
	pipeSend(t, p, 0, n)
	await(t, collected, waitTimeout)
}

// TestPipeline_WindowBoundsRequestsInFlight holds the first answer and checks that the
// pipeline writes exactly a window of requests, then blocks until an answer arrives.
func TestPipeline_WindowBoundsRequestsInFlight(t *testing.T) {
	heldCh := make(chan raft.RPC, 1) // one: only the first request is held
	_, _, _, p := openPipeline(t, Options{MaxPipelineInflight: 4}, func(rpc raft.RPC) {
		if rpc.Command.(*raft.AppendEntriesRequest).PrevLogIndex == 0 {
			heldCh <- rpc
			return
		}
		echo(rpc)
	})
	sent := goCall(func() error { pipeSend(t, p, 0, 5); return nil })
	held := <-heldCh
	inflight := func() int { return len(p.(*pipeline).slots) }
	waitFor(t, "a full window", func() bool { return inflight() == 4 })
	select {
	case <-sent:
		t.Fatal("a fifth request went out with the window full")
	default:
	}
	echo(held)
	await(t, sent, waitTimeout)
	pipeCollect(t, p, 0, 5)
}

// TestPipeline_FailureFallsBackAndRecovers breaks the pipeline's connection with requests in
// flight, then checks: those requests fail in order, the pipeline refuses more, plain
// AppendEntries works, and a new pipeline works.
func TestPipeline_FailureFallsBackAndRecovers(t *testing.T) {
	var hold atomic.Bool
	hold.Store(true)
	heldCh := make(chan raft.RPC, 16) // room for every request the test sends while holding
	server, client, _, p := openPipeline(t, Options{MaxPipelineInflight: 16}, func(rpc raft.RPC) {
		if hold.Load() {
			heldCh <- rpc
			return
		}
		echo(rpc)
	})
	pipeSend(t, p, 0, 3)
	held := <-heldCh
	closeInbound(server) // the network fails under the pipeline
	for i := 0; i < 3; i++ {
		f := <-p.Consumer()
		if f.Error() == nil || f.Request().PrevLogIndex != uint64(i) {
			t.Fatalf("future %d after the failure: prev %d, err %v; want an error, in order", i, f.Request().PrevLogIndex, f.Error())
		}
	}
	if _, err := p.AppendEntries(appendReq(1, 3, 1, 8), new(raft.AppendEntriesResponse)); err == nil {
		t.Fatal("a failed pipeline accepted a request")
	}
	p.Close()
	echo(held) // the answer meets a closed connection; its handler logs and exits
	waitFor(t, "the broken connection's handler to exit", func() bool { return inboundCount(server) == 0 })
	hold.Store(false)
	mustAppend(t, client, server, appendReq(1, 3, 1, 8))
	p2, err := client.AppendEntriesPipeline("s", server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	pipeSend(t, p2, 4, 20)
	pipeCollect(t, p2, 4, 20)
}

// TestPipeline_RemoteErrorKeepsPipeline checks that an error answer fails only its own
// request.
func TestPipeline_RemoteErrorKeepsPipeline(t *testing.T) {
	_, _, _, p := openPipeline(t, Options{}, func(rpc raft.RPC) {
		if rpc.Command.(*raft.AppendEntriesRequest).PrevLogIndex == 1 {
			rpc.Respond(nil, raft.ErrRaftShutdown)
			return
		}
		echo(rpc)
	})
	pipeSend(t, p, 0, 3)
	for i := 0; i < 3; i++ {
		err := (<-p.Consumer()).Error()
		if (i == 1) != errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("future %d: err = %v", i, err)
		}
	}
	pipeSend(t, p, 3, 2)
	pipeCollect(t, p, 3, 2)
}

// TestPipeline_CloseCompletesInflight closes a pipeline whose peer never answers and checks
// every future completes promptly with an error.
func TestPipeline_CloseCompletesInflight(t *testing.T) {
	_, _, node, p := openPipeline(t, Options{Timeout: time.Minute}, func(raft.RPC) {})
	var futures []raft.AppendFuture
	for i := 0; i < 4; i++ {
		f, err := p.AppendEntries(appendReq(1, uint64(i), 1, 8), new(raft.AppendEntriesResponse))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	waitFor(t, "the first request at the node", func() bool { return node.count() == 1 })
	p.Close()
	for i, f := range futures {
		if r := await(t, goCall(f.Error), 2*time.Second); r.err == nil {
			t.Fatalf("future %d succeeded after Close", i)
		}
	}
	if _, err := p.AppendEntries(appendReq(1, 9, 1, 8), new(raft.AppendEntriesResponse)); !errors.Is(err, ErrPipelineShutdown) {
		t.Fatalf("AppendEntries after Close: %v, want ErrPipelineShutdown", err)
	}
}

// countingLayer is a StreamLayer that counts the keepalive frames its dialed connections
// write (a keepalive is flushed as one 5-byte write starting with 0x00).
type countingLayer struct {
	StreamLayer
	keepalives atomic.Int64
}

func (l *countingLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := l.StreamLayer.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, layer: l}, nil
}

type countingConn struct {
	net.Conn
	layer *countingLayer
}

func (c *countingConn) Write(p []byte) (int, error) {
	if len(p) == frameHeaderBytes && p[0] == byte(frameKeepalive) {
		c.layer.keepalives.Add(1)
	}
	return c.Conn.Write(p)
}

// TestPipeline_IdlePipelineSurvivesListenerTimeouts leaves a pipeline without requests for
// longer than the listener's first-frame and idle timeouts: its keepalives keep the
// connection open and it still works afterwards.
func TestPipeline_IdlePipelineSurvivesListenerTimeouts(t *testing.T) {
	timeouts := Options{Timeout: 200 * time.Millisecond, IdleTimeout: 600 * time.Millisecond}
	server, logs := newTestTransport(t, timeouts)
	startNode(t, server, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	layer := &countingLayer{StreamLayer: &tcpLayer{Listener: ln, advertise: ln.Addr()}}
	timeouts.Logger = hclog.NewNullLogger()
	client, err := NewTransportWithLayer(layer, timeouts)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p, err := client.AppendEntriesPipeline("s", server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// The first keepalive goes out on open; three more span a whole idle timeout.
	waitFor(t, "four keepalives", func() bool { return layer.keepalives.Load() >= 4 })
	pipeSend(t, p, 0, 5)
	pipeCollect(t, p, 0, 5)
	if n := logs.count("idle connection closed"); n != 0 {
		t.Fatalf("the listener closed %d idle connections:\n%s", n, logs)
	}
}
