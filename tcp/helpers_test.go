package tcp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

// waitTimeout bounds every wait in these tests; a loaded CI machine still meets it.
const waitTimeout = 10 * time.Second

// logBuffer collects a transport's log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// count returns how many lines contain s.
func (l *logBuffer) count(s string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// testLogger returns a Debug-level logger writing into a fresh logBuffer.
func testLogger(name string) (hclog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: lb, Level: hclog.Debug}), lb
}

// newTestTransport starts a loopback transport closed at the end of the test.
func newTestTransport(t testing.TB, opts Options) (*Transport, *logBuffer) {
	t.Helper()
	var lb *logBuffer
	if opts.Logger == nil {
		opts.Logger, lb = testLogger(t.Name())
	}
	trans, err := NewTransport("127.0.0.1:0", nil, opts)
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() { trans.Close() })
	return trans, lb
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		<-tick.C
	}
}

// fakeNode is an in-test node: a goroutine that reads a transport's Consumer and answers
// every RPC through handle, recording the commands it got. The test owns it; it exits at the
// end of the test.
type fakeNode struct {
	handle func(rpc raft.RPC)

	mu  sync.Mutex
	got []any
}

// startNode serves trans with handle (echo when nil) until the test ends.
func startNode(t testing.TB, trans *Transport, handle func(rpc raft.RPC)) *fakeNode {
	t.Helper()
	if handle == nil {
		handle = echo
	}
	n := &fakeNode{handle: handle}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case rpc := <-trans.Consumer():
				n.mu.Lock()
				n.got = append(n.got, rpc.Command)
				n.mu.Unlock()
				n.handle(rpc)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return n
}

func (n *fakeNode) received() []any {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]any(nil), n.got...)
}

func (n *fakeNode) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.got)
}

// echo answers every request with a canned response derived from it: the same term, and for
// AppendEntries the index of the last entry, so callers can match answers to requests.
func echo(rpc raft.RPC) {
	rpc.Respond(echoResponse(rpc.Command), nil)
}

func echoResponse(cmd any) any {
	switch req := cmd.(type) {
	case *raft.AppendEntriesRequest:
		last := req.PrevLogIndex
		if n := len(req.Entries); n > 0 {
			last = req.Entries[n-1].Index
		}
		return &raft.AppendEntriesResponse{Term: req.Term, Success: true, LastLogIndex: last}
	case *raft.RequestVoteRequest:
		return &raft.RequestVoteResponse{Term: req.Term, Granted: true}
	case *raft.RequestPreVoteRequest:
		return &raft.RequestPreVoteResponse{Term: req.Term, Granted: true}
	case *raft.InstallSnapshotRequest:
		return &raft.InstallSnapshotResponse{Term: req.Term, Success: true}
	case *raft.TimeoutNowRequest:
		return &raft.TimeoutNowResponse{Term: req.Term}
	default:
		panic(fmt.Sprintf("test node got %T", cmd))
	}
}

// appendReq builds an AppendEntries with n entries of size bytes following prevIndex.
func appendReq(term, prevIndex uint64, n, size int) *raft.AppendEntriesRequest {
	req := &raft.AppendEntriesRequest{
		RPCHeader:    raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: "leader", Addr: "127.0.0.1:1"},
		Term:         term,
		PrevLogIndex: prevIndex,
		PrevLogTerm:  term,
	}
	for i := 0; i < n; i++ {
		req.Entries = append(req.Entries, &raft.Log{
			Index: prevIndex + 1 + uint64(i), Term: term, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, size),
		})
	}
	return req
}

// mustAppend sends one AppendEntries from client to server and checks the echo.
func mustAppend(t testing.TB, client, server *Transport, req *raft.AppendEntriesRequest) {
	t.Helper()
	var resp raft.AppendEntriesResponse
	if err := client.AppendEntries("server", server.LocalAddr(), req, &resp); err != nil {
		t.Fatalf("AppendEntries: %v", err)
	}
	if want := echoResponse(req).(*raft.AppendEntriesResponse); resp != *want {
		t.Fatalf("AppendEntries response = %+v, want %+v", resp, *want)
	}
}

// inboundCount returns how many inbound connections trans has open.
func inboundCount(trans *Transport) int {
	trans.mu.Lock()
	defer trans.mu.Unlock()
	return len(trans.inbound)
}

// closeInbound closes every inbound connection of trans, as a network failure would.
func closeInbound(trans *Transport) {
	trans.mu.Lock()
	conns := make([]net.Conn, 0, len(trans.inbound))
	for nc := range trans.inbound {
		conns = append(conns, nc)
	}
	trans.mu.Unlock()
	for _, nc := range conns {
		nc.Close()
	}
}

// errResult is the outcome of a call run on another goroutine.
type errResult struct {
	err  error
	took time.Duration
}

// goCall runs fn on a goroutine and returns a channel with its result (buffer of one: the
// goroutine never blocks, even if the test stopped listening).
func goCall(fn func() error) <-chan errResult {
	ch := make(chan errResult, 1)
	start := time.Now()
	go func() {
		err := fn()
		ch <- errResult{err: err, took: time.Since(start)}
	}()
	return ch
}

// await returns the result of a goCall, failing the test if it takes longer than limit.
func await(t testing.TB, ch <-chan errResult, limit time.Duration) errResult {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r
	case <-timer.C:
		t.Fatalf("call did not return within %s", limit)
		return errResult{}
	}
}

// isTimeout reports whether err is an I/O timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
