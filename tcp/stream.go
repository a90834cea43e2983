package tcp

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/raftkit/raft"
)

// StreamLayer is what a Transport runs over: a listener for inbound connections plus a way to
// dial peers. Plug in TLS, a multiplexed port or an in-process pipe by implementing it.
//
// The Transport calls Accept from its single accept goroutine, Dial from any goroutine that
// sends an RPC (concurrently), and Close once from Transport.Close; Close must make a blocked
// Accept return an error. Addr is the address advertised to peers: it must be dialable by
// them. Returned connections belong to the Transport, which closes them.
type StreamLayer interface {
	net.Listener

	// Dial connects to a peer's StreamLayer, giving up after timeout (including any
	// handshake the layer performs).
	Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error)
}

// tcpLayer is the StreamLayer over plain TCP, or TLS when tlsConf is set.
type tcpLayer struct {
	net.Listener
	advertise net.Addr
	tlsConf   *tls.Config
}

// Addr returns the advertised address.
func (l *tcpLayer) Addr() net.Addr { return l.advertise }

// Dial connects over TCP and, with TLS, completes the handshake within timeout.
func (l *tcpLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: timeout}
	if l.tlsConf == nil {
		return dialer.Dial("tcp", string(address))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	td := &tls.Dialer{NetDialer: dialer, Config: l.tlsConf}
	return td.DialContext(ctx, "tcp", string(address))
}

// HostAddr is a TCP address given as host:port, where host may be a name: "node1:7000",
// "raft-0.raft.example.svc:7000" or "10.0.0.5:7000". Pass it as the advertise address of
// NewTransport or NewTLSTransport to have peers dial that name, resolving it each time they
// connect, rather than the IP it resolved to when the transport started.
type HostAddr string

// Network returns "tcp".
func (a HostAddr) Network() string { return "tcp" }

// String returns the address as given.
func (a HostAddr) String() string { return string(a) }

// NewTransport listens on bindAddr (for example "10.0.0.5:7000" or "127.0.0.1:0") and
// returns a Transport over plain TCP. advertise is the address peers dial, and LocalAddr
// returns its String() exactly as given: a *net.TCPAddr, or a HostAddr to advertise a host
// name. It must name a host peers can dial (not 0.0.0.0 or ::) and a non-zero port. nil
// means the bound address (a host name in bindAddr is resolved, a port 0 picked), which then
// must not be unspecified either.
func NewTransport(bindAddr string, advertise net.Addr, opts Options) (*Transport, error) {
	return newTCPTransport(bindAddr, advertise, nil, opts)
}

// NewTLSTransport is NewTransport over TLS. tlsConf serves both roles: its Certificates are
// presented to dialing peers and, when dialing, to the peer's listener; RootCAs verifies the
// peers' server certificates. For mutual TLS set ClientAuth to tls.RequireAndVerifyClientCert
// and ClientCAs to the cluster CA: a peer without a valid client certificate is then refused
// during the handshake. The handshake of an inbound connection must finish within
// Options.Timeout.
func NewTLSTransport(bindAddr string, advertise net.Addr, tlsConf *tls.Config, opts Options) (*Transport, error) {
	if tlsConf == nil {
		return nil, fmt.Errorf("%w: tcp: nil tls.Config", raft.ErrInvalidConfig)
	}
	return newTCPTransport(bindAddr, advertise, tlsConf, opts)
}

func newTCPTransport(bindAddr string, advertise net.Addr, tlsConf *tls.Config, opts Options) (*Transport, error) {
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, fmt.Errorf("tcp: listening on %s: %w", bindAddr, err)
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if err := checkAdvertisable(advertise); err != nil {
		ln.Close()
		return nil, err
	}
	layer := &tcpLayer{Listener: ln, advertise: advertise, tlsConf: tlsConf}
	if tlsConf != nil {
		layer.Listener = tls.NewListener(ln, tlsConf)
	}
	t, err := NewTransportWithLayer(layer, opts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return t, nil
}

// checkAdvertisable refuses an address a peer could not dial: another network than TCP, no
// host, a wildcard IP, or a port that is missing or 0.
func checkAdvertisable(addr net.Addr) error {
	if addr.Network() != "tcp" {
		return fmt.Errorf("%w: %s is not a TCP address", ErrNotAdvertisable, addr)
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotAdvertisable, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%w: %s has no port peers can dial", ErrNotAdvertisable, addr)
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		return fmt.Errorf("%w: %s has no host peers can dial", ErrNotAdvertisable, addr)
	}
	return nil
}
