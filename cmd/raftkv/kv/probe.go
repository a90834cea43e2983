package kv

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/tcp"
)

// The raft port also answers a small probe, so that a node about to bootstrap a fresh data
// directory can ask the peers of its --raft_cluster whether a cluster that already knows it
// is running (see Node.checkFreshBootstrap). --raft_cluster names raft addresses only, so the
// raft port is the one place a peer is known to listen.
//
// A probe connection sends the single byte probeByte, which is no frame type of the tcp
// transport (those are 0x00-0x05), and reads one JSON ProbeAnswer until the peer closes.
// Every other connection is handed to the tcp transport unchanged. With TLS, the probe rides
// the same mutual TLS as raft traffic.
const probeByte = 0xA5

// probeSniffTimeout bounds how long an accepted connection may stay silent before its first
// byte: the tcp transport itself closes silent connections after its Timeout, of this order.
const probeSniffTimeout = 10 * time.Second

// maxProbeAnswerBytes bounds the answer a prober reads.
const maxProbeAnswerBytes = 1 << 20

// ProbeAnswer is what the raft port answers a probe with.
type ProbeAnswer struct {
	ID        string `json:"id"`
	Term      uint64 `json:"term"`
	LastIndex uint64 `json:"last_index"`
	// Registered lists the IDs of the members that registered their HTTP address: nodes that
	// have run as members of this cluster.
	Registered []string `json:"registered"`
	// Servers lists the IDs in the latest configuration.
	Servers []string `json:"servers"`
}

// probeLayer is a tcp.StreamLayer that answers probes itself and passes every other
// connection to the transport.
//
// Goroutines: the accept loop (exits when the listener closes) and one sniffer per accepted
// connection (exits after its first byte, or probeSniffTimeout); Close waits for all.
type probeLayer struct {
	ln      net.Listener // TCP, wrapped in TLS when tlsConf is set
	addr    tcp.HostAddr // advertised: see advertised
	tlsConf *tls.Config
	answer  func() ProbeAnswer // set once before the first Accept; nil: probes are closed
	conns   chan net.Conn      // unbuffered: a connection is handed over only when accepted
	done    chan struct{}      // closed by Close
	once    sync.Once
	wg      sync.WaitGroup

	mu       sync.Mutex            // guards sniffing; never held across I/O
	sniffing map[net.Conn]struct{} // connections whose first byte is awaited; Close closes them
	closed   bool                  // set by Close: no new sniffer registers
}

// newProbeLayer binds bind and advertises it as spelled (see advertised).
func newProbeLayer(bind string, tlsConf *tls.Config, answer func() ProbeAnswer) (*probeLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	addr, err := advertised(bind, ln.Addr())
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("%w: peers cannot dial it (give this host's IP or name)", err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	l := &probeLayer{ln: ln, addr: tcp.HostAddr(addr), tlsConf: tlsConf, answer: answer, conns: make(chan net.Conn),
		done: make(chan struct{}), sniffing: make(map[net.Conn]struct{})}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *probeLayer) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // the listener closed
		}
		l.wg.Add(1)
		go l.sniff(c)
	}
}

// sniff reads the first byte of c: a probe is answered here, anything else goes to Accept.
func (l *probeLayer) sniff(c net.Conn) {
	defer l.wg.Done()
	if !l.track(c, true) {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(probeSniffTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	l.track(c, false)
	if err != nil {
		_ = c.Close()
		return
	}
	if first[0] == probeByte {
		_ = c.SetWriteDeadline(time.Now().Add(probeSniffTimeout))
		_ = json.NewEncoder(c).Encode(l.answer())
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	select {
	case l.conns <- &sniffedConn{Conn: c, r: br}:
	case <-l.done:
		_ = c.Close()
	}
}

// track adds c to (or removes it from) the connections Close must interrupt; false when the
// layer is already closed.
func (l *probeLayer) track(c net.Conn, add bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !add {
		delete(l.sniffing, c)
		return true
	}
	if l.closed {
		return false
	}
	l.sniffing[c] = struct{}{}
	return true
}

// Accept implements net.Listener.
func (l *probeLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: it stops accepting and waits for the sniffers.
func (l *probeLayer) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
		l.mu.Lock()
		l.closed = true
		for c := range l.sniffing {
			_ = c.Close() // a silent connection must not hold Close for probeSniffTimeout
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

// Addr implements net.Listener: the advertised address, which the transport announces.
func (l *probeLayer) Addr() net.Addr { return l.addr }

// Dial implements tcp.StreamLayer.
func (l *probeLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialRaft(string(address), l.tlsConf, timeout)
}

func dialRaft(address string, tlsConf *tls.Config, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if tlsConf == nil {
		return d.Dial("tcp", address)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return (&tls.Dialer{NetDialer: d, Config: tlsConf}).DialContext(ctx, "tcp", address)
}

// sniffedConn is a connection whose first bytes were read into r already.
type sniffedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *sniffedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Probe asks the raft port at address for its ProbeAnswer, within timeout.
func Probe(address string, tlsConf *tls.Config, timeout time.Duration) (ProbeAnswer, error) {
	c, err := dialRaft(address, tlsConf, timeout)
	if err != nil {
		return ProbeAnswer{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{probeByte}); err != nil {
		return ProbeAnswer{}, err
	}
	var a ProbeAnswer
	if err := json.NewDecoder(io.LimitReader(c, maxProbeAnswerBytes)).Decode(&a); err != nil {
		return ProbeAnswer{}, fmt.Errorf("probe of %s: %w", address, err)
	}
	return a, nil
}

// ErrLostData is what StartNode returns instead of bootstrapping an empty data directory
// when a peer of the cluster runs a cluster in which this node already registered: the node
// has lost its log and its votes, and must not act as the voter it was.
var ErrLostData = errors.New("kv: this node's data directory is empty, but the cluster already knows it")

// probeTimeout bounds the probe of each peer before a fresh bootstrap; peers are probed in
// parallel, and one that does not answer (not started yet) does not count.
const probeTimeout = time.Second

// checkFreshBootstrap runs before a fresh data directory is bootstrapped with cluster: it
// probes the other listed servers and refuses when one of them runs a cluster in which this
// node's ID registered (it ran before, so it held a log and cast votes that are now lost).
// A cluster formed without this node (it was started later for the first time) has no
// registration of it, so a first start is never refused.
func (n *Node) checkFreshBootstrap(cluster []raft.Server) error {
	type result struct {
		addr   raft.ServerAddress
		answer ProbeAnswer
		err    error
	}
	// Buffered: no prober ever blocks, and the loop below receives from every one of them,
	// so all have exited when it returns.
	results := make(chan result, len(cluster))
	probes := 0
	for _, srv := range cluster {
		if srv.ID == n.conf.ID {
			continue
		}
		probes++
		go func(addr raft.ServerAddress) {
			a, err := Probe(string(addr), n.conf.TLS, probeTimeout)
			results <- result{addr, a, err}
		}(srv.Address)
	}
	for i := 0; i < probes; i++ {
		r := <-results
		if r.err != nil {
			continue
		}
		for _, id := range r.answer.Registered {
			if id == string(n.conf.ID) {
				return fmt.Errorf("%w: peer %s (%s) runs a cluster (term %d, last index %d) in which node %s already ran, and %s holds no log: "+
					"remove this node (POST /leave {\"id\":\"%s\"} on a member), then start it with --join; or, only if you know no vote or entry was lost, start it with --force_bootstrap",
					ErrLostData, r.answer.ID, r.addr, r.answer.Term, r.answer.LastIndex, n.conf.ID, n.conf.DataDir, n.conf.ID)
			}
		}
	}
	return nil
}

// probeAnswer describes this node for a probe.
func (n *Node) probeAnswer() ProbeAnswer {
	a := ProbeAnswer{ID: string(n.conf.ID)}
	r := n.probeRaft.Load()
	if r == nil {
		return a // still starting: nothing to report yet
	}
	a.Term, a.LastIndex = r.CurrentTerm(), r.LastIndex()
	a.Registered = n.fsm.MemberIDs()
	for _, srv := range r.GetConfiguration().Configuration().Servers {
		a.Servers = append(a.Servers, string(srv.ID))
	}
	return a
}
