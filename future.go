package raft

import (
	"context"
	"io"
	"sync"
	"time"
)

// Future is the result of an asynchronous request.
type Future interface {
	// Error blocks until the request completed, its timeout passed or the node shut down,
	// and returns nil on success. Every call returns the same result.
	Error() error
}

// IndexFuture is a Future for a request that created a log entry.
type IndexFuture interface {
	Future
	// Index is the log index assigned to the entry; valid once Error returned nil.
	Index() uint64
}

// ApplyFuture is returned by Apply.
type ApplyFuture interface {
	IndexFuture
	// Response is the value FSM.Apply returned for the entry, on this node, after it was
	// applied; valid once Error returned nil.
	Response() any
}

// ConfigurationFuture is returned by GetConfiguration.
type ConfigurationFuture interface {
	IndexFuture
	// Configuration is the latest configuration; valid once Error returned nil.
	Configuration() Configuration
}

// SnapshotFuture is returned by Snapshot.
type SnapshotFuture interface {
	Future
	// Open opens the snapshot that was taken. The caller closes the reader.
	Open() (*SnapshotMeta, io.ReadCloser, error)
}

// deferError is the completion shared by every future: respond resolves it exactly once;
// later responds are ignored, so a timeout and a late completion cannot both win.
type deferError struct {
	once sync.Once
	done chan struct{} // closed by the one respond
	err  error         // written before done is closed

	// Bounds on the wait, set by init before the future is handed to the caller.
	deadline   time.Time       // zero: none
	ctx        context.Context // nil: none
	shutdownCh <-chan struct{} // the node's; nil: none
}

// init readies d for a request whose wait on Error ends at deadline (zero: none), when ctx
// ends (nil: never) or when shutdownCh closes (nil: never).
func (d *deferError) init(shutdownCh <-chan struct{}, deadline time.Time, ctx context.Context) {
	d.done = make(chan struct{})
	d.shutdownCh, d.deadline, d.ctx = shutdownCh, deadline, ctx
}

// respond resolves the future; only the first call counts.
func (d *deferError) respond(err error) {
	d.once.Do(func() {
		d.err = err
		close(d.done)
	})
}

// Error implements Future. It waits for completion, but never past the deadline, the
// context or the node's shutdown. A caller only ever holds a future whose request was handed
// over (a hand-off that fails returns an errorFuture with ErrEnqueueTimeout instead), so a
// wait that ends early reports ErrTimeout: the outcome is unknown.
func (d *deferError) Error() error {
	select {
	case <-d.done:
		return d.err
	default:
	}
	timeout, ctxDone, stop := waitBounds(d.deadline, d.ctx)
	defer stop()
	select {
	case <-d.done:
	case <-timeout:
		d.respond(ErrTimeout)
	case <-ctxDone:
		d.respond(&wrappedErr{base: ErrTimeout, cause: d.ctx.Err()})
	case <-d.shutdownCh:
		d.respond(ErrRaftShutdown)
	}
	return d.err
}

// wrappedErr matches both a raft sentinel and a context error with errors.Is.
type wrappedErr struct{ base, cause error }

func (e *wrappedErr) Error() string   { return e.base.Error() + ": " + e.cause.Error() }
func (e *wrappedErr) Unwrap() []error { return []error{e.base, e.cause} }

// errorFuture is a future that failed before it started.
type errorFuture struct{ err error }

func (e errorFuture) Error() error                                { return e.err }
func (e errorFuture) Index() uint64                               { return 0 }
func (e errorFuture) Response() any                               { return nil }
func (e errorFuture) Configuration() Configuration                { return Configuration{} }
func (e errorFuture) Open() (*SnapshotMeta, io.ReadCloser, error) { return nil, nil, e.err }

// logFuture is an entry on its way through the log: created by Apply/Barrier (or by the
// leader itself for no-op and configuration entries), resolved by the FSM goroutine after the
// entry was applied, or by the main loop when it fails.
type logFuture struct {
	deferError
	log        Log
	response   any       // written by the FSM goroutine before respond
	dispatched time.Time // set by the main loop when the entry got its index
	committed  time.Time // set by the main loop before handing the entry to the FSM goroutine
	created    time.Time
}

func (l *logFuture) Index() uint64 { return l.log.Index }
func (l *logFuture) Response() any { return l.response }

// newLogFuture prepares a future whose Error waits at most timeout (0: no limit).
func (r *Raft) newLogFuture(log Log, timeout time.Duration, ctx context.Context) *logFuture {
	f := &logFuture{log: log, created: time.Now()}
	var deadline time.Time
	if timeout > 0 {
		deadline = f.created.Add(timeout)
	}
	f.init(r.shutdownCh, deadline, ctx)
	return f
}

// shutdownFuture resolves when every goroutine of the node exited.
type shutdownFuture struct{ r *Raft }

func (s shutdownFuture) Error() error {
	s.r.wg.Wait()
	return nil
}

// verifyFuture confirms leadership: it completes when a quorum of voters acknowledged a
// heartbeat sent after it was created.
type verifyFuture struct {
	deferError
	mu     sync.Mutex
	quorum int
	voted  map[ServerID]bool // guarded by mu
}

// newVerifyFuture returns a leadership confirmation whose Error waits at most until
// shutdownCh closes or ctx ends (nil: never).
func newVerifyFuture(shutdownCh <-chan struct{}, ctx context.Context) *verifyFuture {
	v := &verifyFuture{voted: make(map[ServerID]bool)}
	v.init(shutdownCh, time.Time{}, ctx)
	return v
}

// vote counts one voter's acknowledgement and resolves the future at quorum.
func (v *verifyFuture) vote(id ServerID) {
	v.mu.Lock()
	if v.voted[id] {
		v.mu.Unlock()
		return
	}
	v.voted[id] = true
	won := len(v.voted) >= v.quorum
	v.mu.Unlock()
	if won {
		v.respond(nil)
	}
}

// configurationFuture answers GetConfiguration.
type configurationFuture struct {
	configuration Configuration
	index         uint64
}

func (c configurationFuture) Error() error                 { return nil }
func (c configurationFuture) Index() uint64                { return c.index }
func (c configurationFuture) Configuration() Configuration { return c.configuration.Clone() }

// bootstrapFuture carries a BootstrapCluster request to the main loop.
type bootstrapFuture struct {
	deferError
	configuration Configuration
}

// handOff sends v on ch for a request bounded by deadline (zero: none) and ctx (nil: none),
// and fails with ErrEnqueueTimeout (wrapping ctx.Err() when ctx ended) or ErrRaftShutdown
// when the send could not happen: the request then never reached its goroutine and takes no
// effect. An already ended ctx fails before trying, since a select with both the send and
// Done ready picks at random.
func handOff[T any](ch chan<- T, v T, deadline time.Time, ctx context.Context, shutdownCh <-chan struct{}) error {
	if ctx != nil {
		if err := ctx.Err(); err != nil {
			return &wrappedErr{base: ErrEnqueueTimeout, cause: err}
		}
	}
	select {
	case ch <- v: // room in the queue: no timer needed (one allocation less per Apply)
		return nil
	default:
	}
	timeout, ctxDone, stop := waitBounds(deadline, ctx)
	defer stop()
	select {
	case ch <- v:
		return nil
	case <-timeout:
		return ErrEnqueueTimeout
	case <-ctxDone:
		return &wrappedErr{base: ErrEnqueueTimeout, cause: ctx.Err()}
	case <-shutdownCh:
		return ErrRaftShutdown
	}
}

// waitBounds returns the channels that end a wait bounded by deadline (zero: none) and ctx
// (nil: none): a timer's channel and ctx's Done, each nil when absent. stop releases the
// timer.
func waitBounds(deadline time.Time, ctx context.Context) (timeout <-chan time.Time, ctxDone <-chan struct{}, stop func()) {
	stop = func() {}
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		timeout, stop = t.C, func() { t.Stop() }
	}
	if ctx != nil {
		ctxDone = ctx.Done()
	}
	return timeout, ctxDone, stop
}
