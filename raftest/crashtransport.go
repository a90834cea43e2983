package raftest

import (
	"io"
	"math"
	"sync"

	"github.com/raftkit/raft"
)

// Transport wraps the node's transport for this incarnation. Once the incarnation crashed,
// its calls fail with ErrCrashed (also a call under way whose answer comes back after the
// crash), no request reaches it, and an answer it gives to a request afterwards is never
// delivered. Crash closes inner, so the node's address is free for the next incarnation and
// peers' calls to it fail as calls to a dead process do.
//
// Requests pass through one goroutine, and each answer through a goroutine of its own; all of
// them exit when the request is answered, or at the crash.
func (inc *Incarnation) Transport(inner raft.Transport) raft.Transport {
	t := &crashTransport{inc: inc, inner: inner, consumer: make(chan raft.RPC)}
	inc.pmu.Lock()
	inc.transports = append(inc.transports, t)
	inc.pmu.Unlock()
	return t
}

type crashTransport struct {
	inc      *Incarnation
	inner    raft.Transport
	consumer chan raft.RPC // unbuffered, like the transports it wraps: handed over when taken
	start    sync.Once
}

// closeInner closes the wrapped transport; the crash calls it.
func (t *crashTransport) closeInner() { _ = t.inner.Close() }

func (t *crashTransport) Consumer() <-chan raft.RPC {
	t.start.Do(func() { go t.forward() })
	return t.consumer
}

// forward hands the inner transport's requests to the node until the crash.
func (t *crashTransport) forward() {
	in := t.inner.Consumer()
	for {
		var rpc raft.RPC
		select {
		case rpc = <-in:
		case <-t.inc.down:
			return
		}
		answer := make(chan raft.RPCResponse, 1) // RPC.RespChan: the node never blocks answering
		out := rpc
		out.RespChan = answer
		if rpc.Reader != nil {
			out.Reader = &crashReader{inc: t.inc, r: rpc.Reader}
		}
		_, install := rpc.Command.(*raft.InstallSnapshotRequest)
		if install {
			t.inc.beginInstall()
		}
		select {
		case t.consumer <- out:
		case <-t.inc.down:
			return
		}
		go t.answer(rpc.RespChan, answer, install)
	}
}

// answer passes the node's answer on, unless the incarnation crashed first.
func (t *crashTransport) answer(to chan<- raft.RPCResponse, from <-chan raft.RPCResponse, install bool) {
	select {
	case resp := <-from:
		if install && t.inc.endInstall() {
			t.inc.Crash()
			return
		}
		t.inc.mu.RLock()
		defer t.inc.mu.RUnlock()
		if !t.inc.Crashed() {
			to <- resp // the buffer of one is ours
		}
	case <-t.inc.down:
	}
}

func (t *crashTransport) LocalAddr() raft.ServerAddress { return t.inner.LocalAddr() }

// call runs one outgoing call, refused once crashed, with its answer dropped if the crash came
// while it was under way.
func (t *crashTransport) call(do func() error) error {
	if t.inc.Crashed() {
		return ErrCrashed
	}
	err := do()
	if t.inc.Crashed() {
		return ErrCrashed
	}
	return err
}

// MaxMessageBytes forwards the inner transport's message limit (raft.MessageLimiter), so
// NewRaft checks the node's byte limits against it as it would without the harness; an inner
// transport without a limit carries any size.
func (t *crashTransport) MaxMessageBytes() int {
	if l, ok := t.inner.(raft.MessageLimiter); ok {
		return l.MaxMessageBytes()
	}
	return math.MaxInt
}

func (t *crashTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return t.call(func() error { return t.inner.AppendEntries(id, target, args, resp) })
}

func (t *crashTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.call(func() error { return t.inner.RequestVote(id, target, args, resp) })
}

func (t *crashTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.call(func() error { return t.inner.RequestPreVote(id, target, args, resp) })
}

func (t *crashTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.call(func() error { return t.inner.TimeoutNow(id, target, args, resp) })
}

func (t *crashTransport) ReadIndex(id raft.ServerID, target raft.ServerAddress, args *raft.ReadIndexRequest, resp *raft.ReadIndexResponse) error {
	return t.call(func() error { return t.inner.ReadIndex(id, target, args, resp) })
}

func (t *crashTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return t.call(func() error {
		return t.inner.InstallSnapshot(id, target, args, resp, &crashReader{inc: t.inc, r: data})
	})
}

func (t *crashTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	var p raft.AppendPipeline
	err := t.call(func() error {
		var err error
		p, err = t.inner.AppendEntriesPipeline(id, target)
		return err
	})
	if err != nil {
		if p != nil {
			_ = p.Close()
		}
		return nil, err
	}
	cp := &crashPipeline{inc: t.inc, inner: p, out: make(chan raft.AppendFuture), closed: make(chan struct{})}
	go cp.forward()
	return cp, nil
}

// Close closes the inner transport (the node shutting down or stopping on its own).
func (t *crashTransport) Close() error { return t.inner.Close() }

// crashPipeline is a pipeline of an incarnation: nothing is sent after the crash, and no
// completed request reaches the node afterwards.
type crashPipeline struct {
	inc       *Incarnation
	inner     raft.AppendPipeline
	out       chan raft.AppendFuture // unbuffered: the inner pipeline's window governs
	closed    chan struct{}          // closed by Close
	closeOnce sync.Once
}

// forward hands completed requests to the node, until the pipeline closes or the crash.
func (p *crashPipeline) forward() {
	in := p.inner.Consumer()
	for {
		var f raft.AppendFuture
		select {
		case f = <-in:
		case <-p.closed:
			return
		case <-p.inc.down:
			return
		}
		select {
		case p.out <- crashFuture{AppendFuture: f, inc: p.inc}:
		case <-p.closed:
			return
		case <-p.inc.down:
			return
		}
	}
}

func (p *crashPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if p.inc.Crashed() {
		return nil, ErrCrashed
	}
	f, err := p.inner.AppendEntries(args, resp)
	if err != nil {
		return nil, err
	}
	return crashFuture{AppendFuture: f, inc: p.inc}, nil
}

func (p *crashPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

func (p *crashPipeline) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	return p.inner.Close()
}

// crashFuture is a pipelined request of an incarnation: it fails once the incarnation
// crashed.
type crashFuture struct {
	raft.AppendFuture
	inc *Incarnation
}

func (f crashFuture) Error() error {
	err := f.AppendFuture.Error()
	if f.inc.Crashed() {
		return ErrCrashed
	}
	return err
}
