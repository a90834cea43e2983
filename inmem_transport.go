package raft

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// errInmemStreamEnded is what the receiver's snapshot reader returns once the InstallSnapshot
// call that carried it returned.
var errInmemStreamEnded = errors.New("raft: inmem transport: snapshot stream ended with its call")

// InmemTransport is the Transport of one node attached to an InmemNetwork. Create it with
// InmemNetwork.NewTransport. It is safe for concurrent use.
//
// Every request and response is copied through msgpack on its way, so the two sides never
// share memory. An error a handler answers with crosses as its text; errors.Is still matches
// the root package's sentinel errors and errors.As a *NotLeaderError.
//
// A call fails at once with ErrTransportShutdown after Close, and with an error wrapping
// ErrUnknownPeer when no open transport is attached at the target. A lost request or response,
// a peer that does not take the request from its consumer channel in time, or a handler that
// does not answer in time fail the call after the network timeout with an error wrapping
// ErrInmemTimeout. A lost response means the peer did handle the request.
type InmemTransport struct {
	net        *InmemNetwork
	addr       ServerAddress
	consumerCh chan RPC      // unbuffered: a request is handed over only when the node takes it
	shutdownCh chan struct{} // closed by Close
	wg         sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	pipelines map[*inmemPipeline]struct{}
}

func newInmemTransport(n *InmemNetwork, addr ServerAddress) *InmemTransport {
	return &InmemTransport{
		net:        n,
		addr:       addr,
		consumerCh: make(chan RPC),
		shutdownCh: make(chan struct{}),
		pipelines:  make(map[*inmemPipeline]struct{}),
	}
}

// Consumer implements Transport. Requests arrive unbuffered: a caller fails if the node does
// not take its request within the network timeout.
func (t *InmemTransport) Consumer() <-chan RPC { return t.consumerCh }

// LocalAddr implements Transport.
func (t *InmemTransport) LocalAddr() ServerAddress { return t.addr }

// AppendEntries implements Transport.
func (t *InmemTransport) AppendEntries(_ ServerID, target ServerAddress, args *AppendEntriesRequest, resp *AppendEntriesResponse) error {
	return inmemCall(t, target, args, resp)
}

// RequestVote implements Transport.
func (t *InmemTransport) RequestVote(_ ServerID, target ServerAddress, args *RequestVoteRequest, resp *RequestVoteResponse) error {
	return inmemCall(t, target, args, resp)
}

// RequestPreVote implements Transport.
func (t *InmemTransport) RequestPreVote(_ ServerID, target ServerAddress, args *RequestPreVoteRequest, resp *RequestPreVoteResponse) error {
	return inmemCall(t, target, args, resp)
}

// TimeoutNow implements Transport.
func (t *InmemTransport) TimeoutNow(_ ServerID, target ServerAddress, args *TimeoutNowRequest, resp *TimeoutNowResponse) error {
	return inmemCall(t, target, args, resp)
}

// ReadIndex implements Transport.
func (t *InmemTransport) ReadIndex(_ ServerID, target ServerAddress, args *ReadIndexRequest, resp *ReadIndexResponse) error {
	return inmemCall(t, target, args, resp)
}

// InstallSnapshot implements Transport. The receiver gets RPC.Reader, which reads straight
// from data, at most args.Size bytes, and only until this call returns; a data that ends
// early reads as io.ErrUnexpectedEOF. The handler may take ten times the network timeout
// plus one timeout per MiB of snapshot to answer. The request is never duplicated.
func (t *InmemTransport) InstallSnapshot(_ ServerID, target ServerAddress, args *InstallSnapshotRequest, resp *InstallSnapshotResponse, data io.Reader) error {
	ex, err := newInmemExchange(t, target, args, false)
	if err != nil {
		return err
	}
	stream := &inmemStream{r: data, remaining: args.Size}
	defer stream.end()
	ex.rpc.Reader = stream
	ex.handlerTimeout = inmemSnapshotTimeout(ex.fate.timeout, args.Size)
	return inmemRoundTrip(ex, resp)
}

// inmemSnapshotTimeout is how long an InstallSnapshot handler may take to answer.
func inmemSnapshotTimeout(timeout time.Duration, sizeBytes int64) time.Duration {
	const maxMiB = 1 << 12 // keeps the product far from overflowing
	mib := min(max(sizeBytes>>20, 0), maxMiB)
	return timeout * time.Duration(10+mib)
}

// AppendEntriesPipeline implements Transport. The pipeline keeps up to 128 requests in flight
// to the peer attached at target now; if that peer closes, the pipeline's requests fail. Its
// requests reach the peer and its responses complete in send order, whatever the link delays.
// The window frees as the caller reads the pipeline's Consumer.
func (t *InmemTransport) AppendEntriesPipeline(_ ServerID, target ServerAddress) (AppendPipeline, error) {
	if t.isClosed() {
		return nil, ErrTransportShutdown
	}
	peer := t.net.open(target)
	if peer == nil {
		return nil, fmt.Errorf("%w: no open transport at %s", ErrUnknownPeer, target)
	}
	p, err := newInmemPipeline(t, peer)
	if err != nil {
		return nil, err // never a typed nil in the interface: callers compare it with nil
	}
	return p, nil
}

// Close implements Transport. It fails every pending call and pipeline and waits for the
// goroutines the transport started. The node stops receiving requests. Closing twice is a
// no-op.
func (t *InmemTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.shutdownCh)
	pipelines := t.pipelines
	t.pipelines = nil
	t.mu.Unlock()

	for p := range pipelines {
		p.Close()
	}
	t.wg.Wait()
	return nil
}

func (t *InmemTransport) isClosed() bool {
	select {
	case <-t.shutdownCh:
		return true
	default:
		return false
	}
}

// spawnLocked runs f on a goroutine that Close waits for, unless the transport is closed.
// t.mu must be held, so no goroutine starts once Close began waiting.
func (t *InmemTransport) spawnLocked(f func()) bool {
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// inmemCall makes one plain request-response call.
func inmemCall[Req, Resp any](t *InmemTransport, target ServerAddress, args *Req, resp *Resp) error {
	ex, err := newInmemExchange(t, target, args, true)
	if err != nil {
		return err
	}
	return inmemRoundTrip(ex, resp)
}

// inmemRoundTrip carries ex's request to the peer and its answer back into resp, on the
// calling goroutine.
func inmemRoundTrip[Resp any](ex *inmemExchange, resp *Resp) error {
	var reqOrder, respOrder time.Time // a plain call orders only itself
	ex.send(&reqOrder)
	out, err := inmemReply[Resp](ex, &respOrder)
	if err != nil {
		return err
	}
	*resp = *out
	return nil
}

// inmemExchange is one request on its way to a peer and its response on the way back. Its
// fields are set when it is created, except those that send sets for await.
type inmemExchange struct {
	t, peer        *InmemTransport
	fate           inmemFate
	start          time.Time
	rpc            RPC // the request as the peer receives it
	respCh         chan RPCResponse
	dupCmd         any // the command of the duplicate copy, when fate.Duplicate
	handlerTimeout time.Duration
	pipeCh         <-chan struct{} // closed when the carrying pipeline closes; nil for plain calls

	// Set by send.
	sendErr error     // why the request did not reach the peer
	lostAt  time.Time // when a lost request was sent; zero if it was not lost
	takenAt time.Time // when the peer took the request
}

// newInmemExchange prepares a call from t to the transport open at target.
func newInmemExchange[Req any](t *InmemTransport, target ServerAddress, args *Req, canDup bool) (*inmemExchange, error) {
	if t.isClosed() {
		return nil, ErrTransportShutdown
	}
	peer := t.net.open(target)
	if peer == nil {
		return nil, fmt.Errorf("%w: no open transport at %s", ErrUnknownPeer, target)
	}
	return newInmemExchangeTo(t, peer, args, canDup)
}

// newInmemExchangeTo draws the fate of a request from t to peer and copies args for the peer
// (twice if the request will be duplicated).
func newInmemExchangeTo[Req any](t, peer *InmemTransport, args *Req, canDup bool) (*inmemExchange, error) {
	fate := t.net.route(t.addr, peer.addr, canDup)
	cmd, dup, err := inmemCopy(t.net, args, fate.Duplicate)
	if err != nil {
		return nil, err
	}
	t.net.sent.Add(1)
	ex := &inmemExchange{
		t:              t,
		peer:           peer,
		fate:           fate,
		start:          time.Now(),
		respCh:         make(chan RPCResponse, 1), // RPC.RespChan: the handler never blocks answering
		handlerTimeout: fate.timeout,
	}
	ex.rpc = RPC{Command: cmd, RespChan: ex.respCh}
	if fate.Duplicate {
		ex.dupCmd = dup
	}
	return ex, nil
}

// send carries the request to the peer: it waits out the drawn delay, never letting the
// request arrive before the one that last used order, then hands it to the peer's consumer
// channel. A lost request is not waited for here but in await, so that requests behind it in a
// pipeline are not held up.
func (ex *inmemExchange) send(order *time.Time) {
	n, timeout := ex.t.net, ex.fate.timeout
	if err := ex.stopped(); err != nil {
		ex.sendErr = err
		return
	}
	if ex.fate.RequestLost || ex.fate.RequestDelay >= timeout {
		n.dropped.Add(1)
		ex.lostAt = ex.start
		ex.sendErr = fmt.Errorf("%w: request to %s lost", ErrInmemTimeout, ex.peer.addr)
		return
	}
	arrival := ex.start.Add(ex.fate.RequestDelay)
	if arrival.Before(*order) {
		arrival = *order
	}
	*order = arrival
	if _, _, err := ex.wait(time.Until(arrival), nil, RPC{}, nil, ex.peer.shutdownCh); err != nil {
		ex.sendErr = err
		return
	}
	_, fired, err := ex.wait(timeout, ex.peer.consumerCh, ex.rpc, nil, ex.peer.shutdownCh)
	if err == nil && fired {
		err = fmt.Errorf("%w: %s did not take the request within %v", ErrInmemTimeout, ex.peer.addr, timeout)
	}
	if err != nil {
		ex.sendErr = err
		return
	}
	n.delivered.Add(1)
	ex.takenAt = time.Now()
	if ex.fate.Duplicate {
		ex.t.mu.Lock()
		spawned := ex.t.spawnLocked(ex.duplicate())
		ex.t.mu.Unlock()
		if spawned {
			n.sent.Add(1)
			n.duplicated.Add(1)
		}
	}
}

// duplicate returns the delivery of the request's second copy, to run on its own goroutine:
// it arrives after its own delay, possibly after the original was answered. The peer's answer
// to it is discarded.
func (ex *inmemExchange) duplicate() func() {
	dup := *ex
	dup.rpc = RPC{Command: ex.dupCmd, RespChan: make(chan RPCResponse, 1)} // never read; lets the handler answer
	n := ex.t.net
	return func() {
		if _, _, err := dup.wait(dup.fate.DuplicateDelay, nil, RPC{}, nil, dup.peer.shutdownCh); err != nil {
			return
		}
		_, fired, err := dup.wait(dup.fate.timeout, dup.peer.consumerCh, dup.rpc, nil, dup.peer.shutdownCh)
		if err == nil && !fired {
			n.delivered.Add(1)
		}
	}
}

// await waits for the peer's answer to a request send carried: for a lost request, it waits
// out the timeout and fails. The caller copies the answer, then calls returnTrip.
func (ex *inmemExchange) await() (RPCResponse, error) {
	if !ex.lostAt.IsZero() {
		// Nobody answers a lost request; the caller notices only by its timeout.
		if _, _, err := ex.wait(time.Until(ex.lostAt.Add(ex.fate.timeout)), nil, RPC{}, nil, nil); err != nil {
			return RPCResponse{}, err
		}
		return RPCResponse{}, ex.sendErr
	}
	if ex.sendErr != nil {
		return RPCResponse{}, ex.sendErr
	}
	rr, fired, err := ex.wait(time.Until(ex.takenAt.Add(ex.handlerTimeout)), nil, RPC{}, ex.respCh, ex.peer.shutdownCh)
	if err == nil && fired {
		err = fmt.Errorf("%w: %s did not answer within %v", ErrInmemTimeout, ex.peer.addr, ex.handlerTimeout)
	}
	if err != nil {
		return RPCResponse{}, err
	}
	ex.t.net.sent.Add(1)
	return rr, nil
}

// returnTrip carries the response back: it is lost on a link that is down now or by the drawn
// drop, else it arrives after its drawn delay, never before the response that last used order.
func (ex *inmemExchange) returnTrip(order *time.Time) error {
	n, timeout := ex.t.net, ex.fate.timeout
	if ex.fate.ResponseLost || ex.fate.ResponseDelay >= timeout || !n.linkUp(ex.peer.addr, ex.t.addr) {
		n.dropped.Add(1)
		if _, _, err := ex.wait(timeout, nil, RPC{}, nil, nil); err != nil {
			return err
		}
		return fmt.Errorf("%w: response from %s lost", ErrInmemTimeout, ex.peer.addr)
	}
	arrival := time.Now().Add(ex.fate.ResponseDelay)
	if arrival.Before(*order) {
		arrival = *order
	}
	*order = arrival
	if _, _, err := ex.wait(time.Until(arrival), nil, RPC{}, nil, nil); err != nil {
		return err
	}
	n.delivered.Add(1)
	return nil
}

// inmemReply waits for the answer to ex, copies it as the wire would and carries it back.
func inmemReply[Resp any](ex *inmemExchange, order *time.Time) (*Resp, error) {
	rr, err := ex.await()
	if err != nil {
		return nil, err
	}
	// Copy at once: the handler may reuse its response after answering.
	var out *Resp
	if rr.Error != nil {
		err = inmemCrossError(rr.Error)
	} else if v, ok := rr.Response.(*Resp); ok && v != nil {
		if out, _, err = inmemCopy(ex.t.net, v, false); err != nil {
			return nil, err
		}
	} else {
		return nil, fmt.Errorf("%w: %s answered %T, want %T", ErrBadRequest, ex.peer.addr, rr.Response, out)
	}
	if tripErr := ex.returnTrip(order); tripErr != nil {
		return nil, tripErr
	}
	return out, err
}

// stopped returns the error of an exchange that must not go on: this transport or the
// carrying pipeline closed.
func (ex *inmemExchange) stopped() error {
	select {
	case <-ex.t.shutdownCh:
		return ErrTransportShutdown
	case <-ex.pipeCh:
		return errInmemPipelineClosed
	default:
		return nil
	}
}

// wait blocks for at most d until the one operation a non-nil channel enables happens:
// handing rpc to sendCh, or receiving a response from recvCh. With both nil it waits d. fired
// reports that d passed first. err reports that the exchange was stopped: this transport
// closed, the carrying pipeline closed, or peerStop (the peer's shutdown channel, where the
// peer's death matters) closed.
func (ex *inmemExchange) wait(d time.Duration, sendCh chan<- RPC, rpc RPC, recvCh <-chan RPCResponse, peerStop <-chan struct{}) (rr RPCResponse, fired bool, err error) {
	// Try first without a timer: most hand-overs and answers are ready.
	select {
	case sendCh <- rpc:
		return rr, false, nil
	case rr = <-recvCh:
		return rr, false, nil
	default:
	}
	if d <= 0 {
		return rr, true, ex.stopped()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case sendCh <- rpc:
	case rr = <-recvCh:
	case <-tm.C:
		fired = true
	case <-ex.t.shutdownCh:
		err = ErrTransportShutdown
	case <-ex.pipeCh:
		err = errInmemPipelineClosed
	case <-peerStop:
		err = fmt.Errorf("%w: %s closed during the call", ErrUnknownPeer, ex.peer.addr)
	}
	return rr, fired, err
}

// inmemStream hands an InstallSnapshot body to the receiver without copying it whole: the
// receiver reads straight from the caller's reader, at most the announced size, and only while
// the call lasts, since the caller owns its reader again once the call returns.
type inmemStream struct {
	// mu is held across the read of the caller's reader, so that end cannot return while a
	// read is under way; reading an in-memory snapshot does not block.
	mu        sync.Mutex
	r         io.Reader
	remaining int64
	err       error // set by end
}

// Read implements io.Reader for the receiver.
func (s *inmemStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if s.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.remaining {
		p = p[:s.remaining]
	}
	n, err := s.r.Read(p)
	s.remaining -= int64(n)
	if err == io.EOF && s.remaining > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// end cuts the receiver off the caller's reader.
func (s *inmemStream) end() {
	s.mu.Lock()
	s.err = errInmemStreamEnded
	s.r = nil
	s.mu.Unlock()
}
