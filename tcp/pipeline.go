package tcp

import (
	"errors"
	"sync"
	"time"

	"github.com/raftkit/raft"
)

// AppendEntriesPipeline opens a pipeline to target on a connection of its own: requests are
// written back to back, up to Options.MaxPipelineInflight unanswered, and a reader goroutine
// matches the responses to them in order. When the connection fails, every request in flight
// completes with the error and the pipeline refuses further requests; the caller then closes
// it and falls back to AppendEntries until a new pipeline opens.
func (t *Transport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	c, err := t.dial(target, time.Now().Add(t.opts.Timeout))
	if err != nil {
		return nil, t.callError(frameAppendEntries, target, err)
	}
	window := t.opts.MaxPipelineInflight
	p := &pipeline{
		t:          t,
		c:          c,
		slots:      make(chan struct{}, window),
		inflight:   make(chan *appendFuture, window),
		doneCh:     make(chan raft.AppendFuture, window),
		closeCh:    make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	if err := p.keepalive(); err != nil {
		t.discard(c)
		return nil, t.callError(frameKeepalive, target, err)
	}
	if !t.spawn(func() bool { t.pipelines[p] = struct{}{}; return true }, p.readLoop) {
		t.discard(c)
		return nil, raft.ErrTransportShutdown
	}
	return p, nil
}

// keepalive writes a keepalive frame, telling the listener the connection is in use.
func (p *pipeline) keepalive() error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if err := p.stopped(); err != nil {
		return err
	}
	err := p.c.nc.SetWriteDeadline(time.Now().Add(p.t.opts.Timeout))
	if err == nil {
		err = p.c.fw.writeKeepalive(p.c.bw)
	}
	if err == nil {
		err = p.c.bw.Flush()
	}
	return err
}

// pipeline implements raft.AppendPipeline on one dedicated connection.
type pipeline struct {
	t *Transport
	c *outConn

	// slots holds one token per request in flight; its capacity is the window, so a full
	// window blocks AppendEntries until the oldest response arrives.
	slots chan struct{}
	// inflight holds the sent requests in send order for the reader; it has the window's
	// capacity, so a writer holding a slot never blocks on it.
	inflight chan *appendFuture
	// doneCh delivers completed requests to the replication goroutine; the window's capacity
	// lets the reader run ahead of a consumer that is briefly busy.
	doneCh chan raft.AppendFuture

	closeCh    chan struct{} // closed by Close
	readerDone chan struct{} // closed when readLoop returns
	closeOnce  sync.Once

	// writeMu serializes writers so frames go out in the order they enter inflight. It is
	// held while writing one frame, which has a write deadline. It guards err.
	writeMu sync.Mutex
	err     error // why the pipeline stopped taking requests
}

// AppendEntries writes args and returns its future without waiting for the response. It
// blocks only while the window is full. resp is filled in before the future is delivered on
// Consumer.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	select {
	case p.slots <- struct{}{}:
	case <-p.closeCh:
		return nil, ErrPipelineShutdown
	}
	*resp = raft.AppendEntriesResponse{}
	f := &appendFuture{args: args, resp: resp, done: make(chan struct{})}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if err := p.stopped(); err != nil {
		<-p.slots
		return nil, err
	}
	f.start = time.Now()
	err := p.c.nc.SetWriteDeadline(f.start.Add(p.t.opts.Timeout))
	if err == nil {
		err = p.c.fw.writeFrame(p.c.bw, frameAppendEntries, args)
	}
	if err == nil {
		err = p.c.bw.Flush()
	}
	if errors.Is(err, ErrFrameTooLarge) {
		<-p.slots // nothing was written: the pipeline stays usable
		return nil, p.t.callError(frameAppendEntries, p.c.target, err)
	}
	if err != nil {
		<-p.slots
		p.err = p.t.callError(frameAppendEntries, p.c.target, err)
		p.c.nc.Close() // the reader fails the requests in flight
		return nil, p.err
	}
	p.inflight <- f // never blocks: f holds a slot
	return f, nil
}

// stopped returns why the pipeline takes no more requests, or nil. After Close that is always
// ErrPipelineShutdown, even if the connection failed first. Called with writeMu held.
func (p *pipeline) stopped() error {
	select {
	case <-p.closeCh:
		return ErrPipelineShutdown
	default:
		return p.err
	}
}

// Consumer delivers completed requests in the order they were sent.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

// Close stops the pipeline and closes its connection. Requests in flight complete with an
// error; those not yet delivered on Consumer are dropped.
func (p *pipeline) Close() error {
	p.closeOnce.Do(func() {
		p.c.nc.Close()
		close(p.closeCh)
		p.writeMu.Lock()
		if p.err == nil {
			p.err = ErrPipelineShutdown
		}
		p.writeMu.Unlock()
		<-p.readerDone
		p.failPending(ErrPipelineShutdown, false)
		p.t.mu.Lock()
		delete(p.t.pipelines, p)
		p.t.mu.Unlock()
		p.t.discard(p.c)
	})
	return nil
}

// readLoop reads responses in order and completes the oldest request with each. Owned by the
// transport; exits when the pipeline closes or its connection fails.
func (p *pipeline) readLoop() {
	defer close(p.readerDone)
	// A third of the idle timeout leaves the listener two chances to see a keepalive.
	ticker := time.NewTicker(p.t.opts.IdleTimeout / 3)
	defer ticker.Stop()
	for {
		var f *appendFuture
		select {
		case f = <-p.inflight:
		case <-ticker.C:
			if err := p.keepalive(); err != nil {
				p.fail(p.t.callError(frameKeepalive, p.c.target, err))
				return
			}
			continue
		case <-p.closeCh:
			return
		}
		err := p.readOne(f)
		<-p.slots
		f.complete(err)
		if !p.deliver(f) {
			return
		}
		var remote *RemoteError
		if err != nil && !errors.As(err, &remote) {
			p.fail(err)
			return
		}
	}
}

// readOne reads the response to f within Timeout of starting to wait for it.
func (p *pipeline) readOne(f *appendFuture) error {
	c := p.c
	err := c.nc.SetReadDeadline(time.Now().Add(p.t.opts.Timeout))
	if err == nil {
		err = c.fr.readResponse(c.br, frameAppendEntries, f.resp, c.target)
	}
	return p.t.callError(frameAppendEntries, c.target, err)
}

// deliver hands a completed future to the consumer; false once the pipeline closed.
func (p *pipeline) deliver(f *appendFuture) bool {
	select {
	case p.doneCh <- f:
		return true
	case <-p.closeCh:
		return false
	}
}

// fail stops the pipeline after a connection error: no new requests, and every request in
// flight completes with err and is delivered in order.
func (p *pipeline) fail(err error) {
	p.c.nc.Close()
	p.writeMu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.writeMu.Unlock()
	p.failPending(err, true)
}

// failPending completes every request still queued in inflight with err. No writer adds more
// once p.err is set. With deliver, each is also delivered on Consumer, in order.
func (p *pipeline) failPending(err error, deliver bool) {
	for {
		select {
		case f := <-p.inflight:
			<-p.slots
			f.complete(err)
			if deliver && !p.deliver(f) {
				deliver = false
			}
		default:
			return
		}
	}
}

// appendFuture is one pipelined AppendEntries.
type appendFuture struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	done  chan struct{} // closed by complete
	err   error         // written once, before done is closed
}

func (f *appendFuture) complete(err error) {
	f.err = err
	close(f.done)
}

// Error blocks until the request completed and returns its error, if any.
func (f *appendFuture) Error() error {
	<-f.done
	return f.err
}

// Start returns when the request was written.
func (f *appendFuture) Start() time.Time { return f.start }

// Request returns the request that was sent.
func (f *appendFuture) Request() *raft.AppendEntriesRequest { return f.args }

// Response returns the peer's response; valid once Error returned nil.
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }
