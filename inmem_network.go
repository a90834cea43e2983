package raft

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// ErrInmemTimeout is wrapped by the error of an InmemTransport call whose request or response
// was lost (a cut link or a random drop), arrived too late, or that the peer did not take from
// its consumer channel or answer within the network timeout. When only the response was lost,
// the peer did handle the request.
var ErrInmemTimeout = errors.New("raft: inmem transport: timed out")

// DefaultInmemTimeout is how long an InmemNetwork lets a caller wait for a lost message before
// its call fails, unless SetTimeout changes it.
const DefaultInmemTimeout = 50 * time.Millisecond

// inmemMaxPooledBuffer caps the encode buffer a pooled codec keeps, so one huge message does
// not pin its buffer for the rest of the test.
const inmemMaxPooledBuffer = 1 << 20

// InmemRoute is what happens to one request and its response on an InmemNetwork, as its
// InmemPolicy decides. The zero value delivers both at once.
type InmemRoute struct {
	// RequestLost loses the request; the caller fails after the network timeout.
	RequestLost bool
	// RequestDelay is added before the request reaches the peer. A delay of the network
	// timeout or more loses the request.
	RequestDelay time.Duration
	// Duplicate delivers a second copy of the request after DuplicateDelay; the answer to it
	// is discarded. It is honoured only where the policy was asked with canDuplicate.
	Duplicate      bool
	DuplicateDelay time.Duration
	// ResponseLost loses the response: the peer did handle the request, but its caller fails
	// after the network timeout.
	ResponseLost bool
	// ResponseDelay is added before the response reaches the caller. A delay of the network
	// timeout or more loses the response.
	ResponseDelay time.Duration
}

// InmemPolicy decides the fate of the messages between the transports of an InmemNetwork: it
// is how a test injects faults (package raftest/memnet has one with cuts, partitions and seeded
// random drops, duplicates and delays). The network never asks it about a node's messages to
// itself. Its methods are called concurrently, from every caller.
type InmemPolicy interface {
	// Route decides the fate of one request from -> to and of its response, when the request
	// is sent. canDuplicate says whether the request may be duplicated (snapshot installs
	// never are).
	Route(from, to ServerAddress, canDuplicate bool) InmemRoute
	// LinkUp reports whether a message from -> to gets through now. It is asked again when a
	// response travels back: a link cut while the peer handled the request loses the answer.
	LinkUp(from, to ServerAddress) bool
}

// InmemNetworkStats counts messages (requests, responses and duplicate requests) since the
// network was created.
type InmemNetworkStats struct {
	// Sent counts messages put on a link.
	Sent uint64
	// Delivered counts messages that reached the other side: requests the peer took from its
	// consumer channel, responses handed back to their caller.
	Delivered uint64
	// Dropped counts messages lost to a fault: a cut link, a random drop, a delay past the
	// timeout. Sent minus Delivered minus Dropped are the messages that failed for another
	// reason (a peer that did not read in time, a transport that closed).
	Dropped uint64
	// Duplicated counts the extra copies of requests the network made.
	Duplicated uint64
}

// InmemNetwork connects InmemTransports in one process. Every message is copied through
// msgpack, so nodes never share memory; a message is delivered at once, and a call fails only
// when its peer is closed or does not take or answer the request within the network timeout.
// An InmemPolicy, set with SetPolicy, may lose, delay or duplicate messages. All methods are
// safe for concurrent use.
//
// The network works inside a testing/synctest bubble when it is created there: it measures
// time only through the time package and starts goroutines only inside its transports, which
// Close stops.
type InmemNetwork struct {
	// codecs pools msgpack encoder/decoder pairs for the copies every message goes through.
	codecs sync.Pool

	// Counters behind Stats; written by every caller, hence atomics.
	sent, delivered, dropped, duplicated atomic.Uint64

	mu         sync.Mutex
	timeout    time.Duration
	transports map[ServerAddress]*InmemTransport
	policy     InmemPolicy // nil: every message is delivered at once
}

// inmemCodec is a reusable msgpack encoder and decoder with their buffer.
type inmemCodec struct {
	buf []byte
	enc *codec.Encoder
	dec *codec.Decoder
}

// NewInmemNetwork returns a network without transports that delivers every message.
func NewInmemNetwork() *InmemNetwork {
	n := &InmemNetwork{
		timeout:    DefaultInmemTimeout,
		transports: make(map[ServerAddress]*InmemTransport),
	}
	n.codecs.New = func() any {
		var c inmemCodec
		c.enc = codec.NewEncoderBytes(&c.buf, msgpackHandle)
		c.dec = codec.NewDecoderBytes(nil, msgpackHandle)
		return &c
	}
	return n
}

// SetPolicy makes p decide the fate of every request sent from now on, and of the responses
// still to travel; nil delivers everything again.
func (n *InmemNetwork) SetPolicy(p InmemPolicy) {
	n.mu.Lock()
	n.policy = p
	n.mu.Unlock()
}

// NewTransport attaches a transport at addr. If a transport at addr exists and was closed (a
// crashed node), the new one replaces it (the node restarted); calls still in flight to the old
// one fail. An open transport at addr is an error.
func (n *InmemNetwork) NewTransport(addr ServerAddress) (*InmemTransport, error) {
	if addr == "" {
		return nil, errors.New("raft: inmem network: empty address")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.transports[addr]; ok && !old.isClosed() {
		return nil, fmt.Errorf("raft: inmem network: address %s already in use", addr)
	}
	t := newInmemTransport(n, addr)
	n.transports[addr] = t
	return t, nil
}

// SetTimeout sets how long a caller waits for a lost message, for a peer to take a request
// from its consumer channel, and for the peer's handler to answer (InstallSnapshot gets longer,
// see InmemTransport.InstallSnapshot). It applies to calls started afterwards. d <= 0 restores
// DefaultInmemTimeout.
func (n *InmemNetwork) SetTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultInmemTimeout
	}
	n.mu.Lock()
	n.timeout = d
	n.mu.Unlock()
}

// Stats returns the message counts so far.
func (n *InmemNetwork) Stats() InmemNetworkStats {
	return InmemNetworkStats{
		Sent:       n.sent.Load(),
		Delivered:  n.delivered.Load(),
		Dropped:    n.dropped.Load(),
		Duplicated: n.duplicated.Load(),
	}
}

// open returns the open transport at addr, or nil.
func (n *InmemNetwork) open(addr ServerAddress) *InmemTransport {
	n.mu.Lock()
	t := n.transports[addr]
	n.mu.Unlock()
	if t == nil || t.isClosed() {
		return nil
	}
	return t
}

// inmemFate is what the network decided for one request and its response. It is drawn when the
// request is sent; whether the response's link is up is checked again when the response
// travels.
type inmemFate struct {
	InmemRoute
	timeout time.Duration
}

// route decides the fate of a request from -> to and of its response. canDup says whether the
// request may be duplicated.
func (n *InmemNetwork) route(from, to ServerAddress, canDup bool) inmemFate {
	n.mu.Lock()
	f, p := inmemFate{timeout: n.timeout}, n.policy
	n.mu.Unlock()
	if p != nil && from != to {
		f.InmemRoute = p.Route(from, to, canDup)
		f.Duplicate = f.Duplicate && canDup && !f.RequestLost
	}
	return f
}

// linkUp reports whether messages from -> to currently get through.
func (n *InmemNetwork) linkUp(from, to ServerAddress) bool {
	n.mu.Lock()
	p := n.policy
	n.mu.Unlock()
	return p == nil || from == to || p.LinkUp(from, to)
}

// inmemCopy returns a fresh copy of v made by encoding it with msgpack and decoding the bytes,
// as if v had crossed a wire. With second, it decodes a second, independent copy too.
func inmemCopy[T any](n *InmemNetwork, v *T, second bool) (*T, *T, error) {
	c := n.codecs.Get().(*inmemCodec)
	defer func() {
		if cap(c.buf) <= inmemMaxPooledBuffer {
			n.codecs.Put(c)
		}
	}()
	c.buf = c.buf[:0]
	c.enc.ResetBytes(&c.buf)
	if err := c.enc.Encode(v); err != nil {
		return nil, nil, fmt.Errorf("raft: inmem transport: encoding %T: %w", v, err)
	}
	out := new(T)
	c.dec.ResetBytes(c.buf)
	if err := c.dec.Decode(out); err != nil {
		return nil, nil, fmt.Errorf("raft: inmem transport: decoding %T: %w", v, err)
	}
	if !second {
		return out, nil, nil
	}
	dup := new(T)
	c.dec.ResetBytes(c.buf)
	if err := c.dec.Decode(dup); err != nil {
		return nil, nil, fmt.Errorf("raft: inmem transport: decoding %T: %w", v, err)
	}
	return out, dup, nil
}

// inmemRemoteError is an error a peer answered with, after crossing the wire: only its text
// survives, plus the root sentinel it matched, so errors.Is keeps working for those.
type inmemRemoteError struct {
	msg   string
	cause error // a root sentinel, a copied *NotLeaderError, or nil
}

func (e *inmemRemoteError) Error() string { return e.msg }
func (e *inmemRemoteError) Unwrap() error { return e.cause }

// inmemCrossError returns what is left of err after it crossed the wire.
func inmemCrossError(err error) error {
	remote := &inmemRemoteError{msg: err.Error()}
	var nl *NotLeaderError
	if errors.As(err, &nl) {
		c := *nl
		remote.cause = &c
		return remote
	}
	sentinels := [...]error{
		ErrNotLeader, ErrLeadershipLost, ErrEnqueueTimeout, ErrTimeout, ErrRaftShutdown,
		ErrAbortedByRestore, ErrCantBootstrap, ErrLeadershipTransferInProgress,
		ErrNothingNewToSnapshot, ErrConfigurationChanged, ErrInvalidConfig,
		ErrInvalidConfiguration, ErrLogNotFound, ErrLogStoreTimeout, ErrPipelineUnsupported,
		ErrTransportShutdown, ErrUnknownPeer, ErrBadRequest, ErrNotVoter,
		ErrSnapshotCorrupt, ErrSnapshotNotFound, ErrInmemTimeout, ErrUnsupportedProtocol,
		ErrLeadershipTransferFailed, ErrInstallInProgress,
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			remote.cause = s
			break
		}
	}
	return remote
}
