package raft

import (
	"errors"
	"fmt"
	"math/rand/v2"
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

// LinkFaults are the random faults of one direction of a link. The zero value is a perfect
// link.
type LinkFaults struct {
	// DropRate is the probability in [0, 1] that a message is lost.
	DropRate float64
	// DuplicateRate is the probability in [0, 1] that a request is delivered twice; the
	// answer to the second copy is discarded. Snapshot installs are never duplicated.
	DuplicateRate float64
	// MinDelay and MaxDelay bound the uniformly drawn latency added to each message. A
	// message delayed past the network timeout is lost.
	MinDelay, MaxDelay time.Duration
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

// InmemNetwork connects InmemTransports in one process and injects faults per link: cuts,
// partitions, random drops, duplicates and delays. Every random decision comes from one
// *rand.Rand seeded at creation and drawn under a mutex, so a run is reproducible from its seed
// as far as goroutine scheduling allows. All methods are safe for concurrent use.
//
// A link is one direction between two addresses. A request travels on the link from its caller
// to its target, its response on the link back. A node's messages to itself are never
// faulted. Link faults (Cut, Disconnect, Partition, Isolate) add up until Heal; random faults
// (SetFaults, SetDefaultFaults) stay until ClearFaults.
//
// The network works inside a testing/synctest bubble when it is created there: it measures
// time only through the time package and starts goroutines only inside its transports, which
// Close stops.
type InmemNetwork struct {
	// codecs pools msgpack encoder/decoder pairs for the copies every message goes through.
	codecs sync.Pool

	// Counters behind Stats; written by every caller, hence atomics.
	sent, delivered, dropped, duplicated atomic.Uint64

	mu            sync.Mutex
	rng           *rand.Rand
	timeout       time.Duration
	transports    map[ServerAddress]*InmemTransport
	cuts          map[inmemLink]struct{}
	isolated      map[ServerAddress]struct{}
	groups        map[ServerAddress]int // nil when no partition is in force
	faults        map[inmemLink]LinkFaults
	defaultFaults LinkFaults
}

// inmemLink is one direction between two addresses.
type inmemLink struct{ from, to ServerAddress }

// inmemCodec is a reusable msgpack encoder and decoder with their buffer.
type inmemCodec struct {
	buf []byte
	enc *codec.Encoder
	dec *codec.Decoder
}

// NewInmemNetwork returns a network without transports or faults whose random faults all come
// from one *rand.Rand seeded with seed.
func NewInmemNetwork(seed int64) *InmemNetwork {
	n := &InmemNetwork{
		rng:        rand.New(rand.NewPCG(uint64(seed), 0)),
		timeout:    DefaultInmemTimeout,
		transports: make(map[ServerAddress]*InmemTransport),
		cuts:       make(map[inmemLink]struct{}),
		isolated:   make(map[ServerAddress]struct{}),
		faults:     make(map[inmemLink]LinkFaults),
	}
	n.codecs.New = func() any {
		var c inmemCodec
		c.enc = codec.NewEncoderBytes(&c.buf, msgpackHandle)
		c.dec = codec.NewDecoderBytes(nil, msgpackHandle)
		return &c
	}
	return n
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

// Cut loses every message from -> to: requests from a caller at from, and responses from a
// node at from to its callers at to. The other direction is untouched.
func (n *InmemNetwork) Cut(from, to ServerAddress) {
	n.mu.Lock()
	n.cuts[inmemLink{from, to}] = struct{}{}
	n.mu.Unlock()
}

// Disconnect cuts both directions between a and b.
func (n *InmemNetwork) Disconnect(a, b ServerAddress) {
	n.mu.Lock()
	n.cuts[inmemLink{a, b}] = struct{}{}
	n.cuts[inmemLink{b, a}] = struct{}{}
	n.mu.Unlock()
}

// Partition splits the network into groups: only nodes in the same group talk, and nodes not
// listed in any group (including ones attached later) are isolated. It replaces an earlier
// partition; cuts and isolations stay. An address listed twice belongs to its last group.
func (n *InmemNetwork) Partition(groups ...[]ServerAddress) {
	m := make(map[ServerAddress]int)
	for i, g := range groups {
		for _, addr := range g {
			m[addr] = i
		}
	}
	n.mu.Lock()
	n.groups = m
	n.mu.Unlock()
}

// Isolate cuts every link to and from addr.
func (n *InmemNetwork) Isolate(addr ServerAddress) {
	n.mu.Lock()
	n.isolated[addr] = struct{}{}
	n.mu.Unlock()
}

// Heal brings every link up again: it undoes Cut, Disconnect, Partition and Isolate. Random
// faults set with SetFaults and SetDefaultFaults stay.
func (n *InmemNetwork) Heal() {
	n.mu.Lock()
	clear(n.cuts)
	clear(n.isolated)
	n.groups = nil
	n.mu.Unlock()
}

// SetFaults sets the random faults of the link from -> to, replacing the default faults for
// it.
func (n *InmemNetwork) SetFaults(from, to ServerAddress, f LinkFaults) {
	n.mu.Lock()
	n.faults[inmemLink{from, to}] = f
	n.mu.Unlock()
}

// SetDefaultFaults sets the random faults of every link without its own SetFaults.
func (n *InmemNetwork) SetDefaultFaults(f LinkFaults) {
	n.mu.Lock()
	n.defaultFaults = f
	n.mu.Unlock()
}

// ClearFaults removes all random faults, per link and default. Cuts and partitions stay.
func (n *InmemNetwork) ClearFaults() {
	n.mu.Lock()
	clear(n.faults)
	n.defaultFaults = LinkFaults{}
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
// request is sent, so the random draws happen in the order calls are made; whether the
// response's link is up is checked again when the response travels.
type inmemFate struct {
	timeout   time.Duration
	reqLost   bool
	reqDelay  time.Duration
	dup       bool
	dupDelay  time.Duration
	respDrop  bool
	respDelay time.Duration
}

// draw decides the fate of a request from -> to and of its response. canDup says whether the
// request may be duplicated.
func (n *InmemNetwork) draw(from, to ServerAddress, canDup bool) inmemFate {
	n.mu.Lock()
	defer n.mu.Unlock()
	req, resp := n.faultsLocked(from, to), n.faultsLocked(to, from)
	f := inmemFate{timeout: n.timeout}
	f.reqLost = n.chanceLocked(req.DropRate) || !n.linkUpLocked(from, to)
	f.reqDelay = n.delayLocked(req)
	if canDup && !f.reqLost && n.chanceLocked(req.DuplicateRate) {
		f.dup = true
		f.dupDelay = n.delayLocked(req)
	}
	f.respDrop = n.chanceLocked(resp.DropRate)
	f.respDelay = n.delayLocked(resp)
	return f
}

// linkUp reports whether messages from -> to currently get through the cuts and partitions.
func (n *InmemNetwork) linkUp(from, to ServerAddress) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.linkUpLocked(from, to)
}

func (n *InmemNetwork) linkUpLocked(from, to ServerAddress) bool {
	if from == to {
		return true
	}
	if _, cut := n.cuts[inmemLink{from, to}]; cut {
		return false
	}
	_, fromIsolated := n.isolated[from]
	_, toIsolated := n.isolated[to]
	if fromIsolated || toIsolated {
		return false
	}
	if n.groups == nil {
		return true
	}
	gf, okf := n.groups[from]
	gt, okt := n.groups[to]
	return okf && okt && gf == gt
}

func (n *InmemNetwork) faultsLocked(from, to ServerAddress) LinkFaults {
	if from == to {
		return LinkFaults{}
	}
	if f, ok := n.faults[inmemLink{from, to}]; ok {
		return f
	}
	return n.defaultFaults
}

// chanceLocked returns true with probability p. It draws from the rng only for 0 < p < 1, so
// links without random faults do not consume randomness.
func (n *InmemNetwork) chanceLocked(p float64) bool {
	switch {
	case p <= 0:
		return false
	case p >= 1:
		return true
	default:
		return n.rng.Float64() < p
	}
}

// delayLocked draws a latency uniformly from [MinDelay, MaxDelay].
func (n *InmemNetwork) delayLocked(f LinkFaults) time.Duration {
	if f.MaxDelay <= f.MinDelay {
		return max(f.MinDelay, 0)
	}
	return max(f.MinDelay+time.Duration(n.rng.Int64N(int64(f.MaxDelay-f.MinDelay)+1)), 0)
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
