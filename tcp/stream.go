package tcp

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
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

// NewTransport listens on bindAddr (for example "10.0.0.5:7000" or "127.0.0.1:0") and
// returns a Transport over plain TCP. advertise is the address peers dial; nil means the
// bound address, which must then not be unspecified (0.0.0.0 or ::).
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

// checkAdvertisable refuses an address a peer could not dial.
func checkAdvertisable(addr net.Addr) error {
	tcpAddr, ok := addr.(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("%w: %s is not a TCP address", ErrNotAdvertisable, addr)
	}
	if tcpAddr.IP == nil || tcpAddr.IP.IsUnspecified() || tcpAddr.Port == 0 {
		return fmt.Errorf("%w: %s", ErrNotAdvertisable, addr)
	}
	return nil
}
