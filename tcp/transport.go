package tcp

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/raftkit/raft"
)

// Transport implements raft.Transport over a StreamLayer. It is safe for concurrent use.
//
// Goroutines: one accept loop, one handler per inbound connection and one response reader
// per open pipeline. Close stops and waits for all of them.
type Transport struct {
	layer     StreamLayer
	opts      Options
	logger    hclog.Logger
	handle    *codec.MsgpackHandle
	localAddr raft.ServerAddress

	// consumerCh is unbuffered: each connection handler waits for the node's answer right
	// after handing over its request, so a buffer would only hide backpressure.
	consumerCh chan raft.RPC

	shutdownCh chan struct{} // closed once by Close
	closeOnce  sync.Once
	wg         sync.WaitGroup // every goroutine the transport starts; Add only under mu

	mu        sync.Mutex // guards the fields below; never held across I/O or channel ops
	shutdown  bool
	idle      map[poolKey][]*outConn // reusable outgoing connections, most recent last
	outbound  map[*outConn]struct{}  // every open outgoing connection, idle or in use
	inbound   map[net.Conn]struct{}  // every open inbound connection
	pipelines map[*pipeline]struct{}
	refusals  refusalLog
}

// NewTransportWithLayer returns a Transport over a custom stream layer and starts accepting
// connections from it. The layer's Addr is advertised as LocalAddr.
func NewTransportWithLayer(layer StreamLayer, opts Options) (*Transport, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Transport{
		layer:      layer,
		opts:       opts,
		logger:     opts.Logger,
		handle:     newMsgpackHandle(),
		localAddr:  raft.ServerAddress(layer.Addr().String()),
		consumerCh: make(chan raft.RPC),
		shutdownCh: make(chan struct{}),
		idle:       make(map[poolKey][]*outConn),
		outbound:   make(map[*outConn]struct{}),
		inbound:    make(map[net.Conn]struct{}),
		pipelines:  make(map[*pipeline]struct{}),
	}
	t.spawn(nil, t.acceptLoop)
	return t, nil
}

// Consumer returns the channel incoming requests arrive on. Each RPC's RespChan has a buffer
// of one. An InstallSnapshot's Reader reads the body straight from the connection and must
// be read before responding; whatever is left unread is discarded after the response.
func (t *Transport) Consumer() <-chan raft.RPC { return t.consumerCh }

// MaxMessageBytes implements raft.MessageLimiter: the frame limit, Options.MaxFrameBytes.
// NewRaft refuses a configuration whose entries or requests would not fit in it.
func (t *Transport) MaxMessageBytes() int { return t.opts.MaxFrameBytes }

var _ raft.MessageLimiter = (*Transport)(nil)

// LocalAddr returns the address peers reach this transport at.
func (t *Transport) LocalAddr() raft.ServerAddress { return t.localAddr }

// Close stops accepting, closes every connection and pipeline, and waits for the transport's
// goroutines. Calls in flight return an error wrapping raft.ErrTransportShutdown. It is safe
// to call more than once.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		close(t.shutdownCh)
		if err := t.layer.Close(); err != nil {
			t.logger.Warn("closing stream layer failed", "error", err)
		}
		t.mu.Lock()
		t.shutdown = true
		inbound, outbound, pipelines := t.inbound, t.outbound, t.pipelines
		t.inbound, t.outbound, t.pipelines = nil, nil, nil
		t.idle = nil
		t.mu.Unlock()
		for p := range pipelines {
			p.Close()
		}
		for nc := range inbound {
			nc.Close()
		}
		for c := range outbound {
			c.nc.Close()
		}
		t.wg.Wait()
	})
	return nil
}

// spawn runs fn on a new goroutine owned by the transport, if register (run under t.mu, may
// be nil) agrees. It returns false, starting nothing, when register refuses or the transport
// is shut down: Close waits only for goroutines registered before it set shutdown, so none may
// start after.
func (t *Transport) spawn(register func() bool, fn func()) bool {
	t.mu.Lock()
	if t.shutdown || (register != nil && !register()) {
		t.mu.Unlock()
		return false
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		fn()
	}()
	return true
}

// isShutdown reports whether Close was called.
func (t *Transport) isShutdown() bool {
	select {
	case <-t.shutdownCh:
		return true
	default:
		return false
	}
}

// callError adds context to a failed outgoing call; after Close it also wraps
// raft.ErrTransportShutdown.
func (t *Transport) callError(typ frameType, target raft.ServerAddress, err error) error {
	if err == nil {
		return nil
	}
	if t.isShutdown() {
		return fmt.Errorf("%w: %s to %s: %w", raft.ErrTransportShutdown, typ, target, err)
	}
	return fmt.Errorf("tcp: %s to %s: %w", typ, target, err)
}

// refusalLog rate-limits the log line for refused inbound connections, so a flood of them
// costs one line per second. Guarded by Transport.mu.
type refusalLog struct {
	last    time.Time
	pending int
}

// note counts one refusal and reports whether to log now, with how many refusals the line
// covers.
func (r *refusalLog) note(now time.Time) (int, bool) {
	r.pending++
	if now.Sub(r.last) < time.Second {
		return 0, false
	}
	n := r.pending
	r.last, r.pending = now, 0
	return n, true
}
