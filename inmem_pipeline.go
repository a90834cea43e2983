package raft

import (
	"errors"
	"sync"
	"time"
)

// errInmemPipelineClosed fails the requests of a pipeline closed while they were in flight.
var errInmemPipelineClosed = errors.New("raft: inmem transport: pipeline closed")

// inmemPipelineWindow is how many requests an inmemPipeline keeps in flight: enough for a
// leader to stream entries to a fast follower, few enough that a stuck one is felt at once.
const inmemPipelineWindow = 128

// inmemPipeline is the AppendPipeline of an InmemTransport: an ordered stream of
// AppendEntries to one peer, like one connection. Two goroutines carry it: sendLoop hands the
// requests to the peer in order, recvLoop waits for their answers in order and completes the
// futures. Both exit once Close closed sendCh and every future was completed.
type inmemPipeline struct {
	t, peer *InmemTransport
	// slots holds one token per request between AppendEntries and its delivery on doneCh.
	slots   chan struct{}
	sendCh  chan *inmemFuture // AppendEntries -> sendLoop; closed by Close
	recvCh  chan *inmemFuture // sendLoop -> recvLoop; closed by sendLoop
	doneCh  chan AppendFuture // recvLoop -> the caller
	closeCh chan struct{}     // closed by Close
	exited  chan struct{}     // closed by recvLoop when it returns

	mu     sync.Mutex
	closed bool
}

// newInmemPipeline opens a pipeline from t to peer and starts its goroutines.
func newInmemPipeline(t, peer *InmemTransport) (*inmemPipeline, error) {
	// Every buffer holds a full window: a request holds its slot until it is delivered on
	// doneCh, so sends on sendCh and recvCh never block, and a caller may fall a whole window
	// behind reading doneCh without stalling the stream.
	p := &inmemPipeline{
		t:       t,
		peer:    peer,
		slots:   make(chan struct{}, inmemPipelineWindow),
		sendCh:  make(chan *inmemFuture, inmemPipelineWindow),
		recvCh:  make(chan *inmemFuture, inmemPipelineWindow),
		doneCh:  make(chan AppendFuture, inmemPipelineWindow),
		closeCh: make(chan struct{}),
		exited:  make(chan struct{}),
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.spawnLocked(p.sendLoop) {
		return nil, ErrTransportShutdown
	}
	t.spawnLocked(p.recvLoop) // cannot fail: t.mu is still held
	t.pipelines[p] = struct{}{}
	return p, nil
}

// AppendEntries implements AppendPipeline. It blocks while the window is full, until the
// oldest request is delivered on Consumer or the pipeline or transport closes.
func (p *inmemPipeline) AppendEntries(args *AppendEntriesRequest, resp *AppendEntriesResponse) (AppendFuture, error) {
	select {
	case p.slots <- struct{}{}:
	case <-p.closeCh:
		return nil, errInmemPipelineClosed
	case <-p.t.shutdownCh:
		return nil, ErrTransportShutdown
	}
	ex, err := newInmemExchangeTo(p.t, p.peer, args, true)
	if err != nil {
		<-p.slots
		return nil, err
	}
	ex.pipeCh = p.closeCh
	f := &inmemFuture{ex: ex, req: args, resp: resp, done: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		<-p.slots
		return nil, errInmemPipelineClosed
	}
	p.sendCh <- f // never blocks: f holds a slot; under mu so Close cannot close sendCh first
	return f, nil
}

// Consumer implements AppendPipeline. Futures of requests still in flight when the pipeline
// closes complete with an error but are not delivered.
func (p *inmemPipeline) Consumer() <-chan AppendFuture { return p.doneCh }

// Close implements AppendPipeline. It returns once every request sent on the pipeline
// completed, those in flight with an error. Closing twice is a no-op.
func (p *inmemPipeline) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closeCh)
		close(p.sendCh)
	}
	p.mu.Unlock()
	<-p.exited

	p.t.mu.Lock()
	delete(p.t.pipelines, p) // a nil map after the transport's Close: a no-op
	p.t.mu.Unlock()
	return nil
}

// sendLoop hands the requests to the peer in order. It exits when Close closed sendCh.
func (p *inmemPipeline) sendLoop() {
	defer close(p.recvCh)
	var order time.Time
	for f := range p.sendCh {
		f.ex.send(&order)
		p.recvCh <- f // never blocks: f holds a slot
	}
}

// recvLoop completes the futures in send order. It exits after sendLoop.
func (p *inmemPipeline) recvLoop() {
	defer close(p.exited)
	var order time.Time
	for f := range p.recvCh {
		out, err := inmemReply[AppendEntriesResponse](f.ex, &order)
		if err == nil {
			*f.resp = *out
		}
		f.err = err
		close(f.done)
		select {
		case p.doneCh <- f:
		case <-p.closeCh:
		}
		<-p.slots
	}
}

// inmemFuture is one pipelined AppendEntries.
type inmemFuture struct {
	ex   *inmemExchange
	req  *AppendEntriesRequest
	resp *AppendEntriesResponse
	done chan struct{} // closed by recvLoop once err and resp are final
	err  error
}

// Error implements AppendFuture.
func (f *inmemFuture) Error() error {
	<-f.done
	return f.err
}

// Start implements AppendFuture.
func (f *inmemFuture) Start() time.Time { return f.ex.start }

// Request implements AppendFuture.
func (f *inmemFuture) Request() *AppendEntriesRequest { return f.req }

// Response implements AppendFuture.
func (f *inmemFuture) Response() *AppendEntriesResponse { return f.resp }
