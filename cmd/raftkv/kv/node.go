package kv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/tcp"
	"github.com/raftkit/raft/wal"
)

// NodeConfig describes one raftkv node.
type NodeConfig struct {
	// ID is the node's raft server ID.
	ID raft.ServerID
	// RaftAddr is the host:port the raft transport binds and advertises, as spelled: a host
	// name (node1:7000, localhost:7000) is advertised as the name, not as the IP it resolves
	// to, so peers resolve it whenever they connect. With Cluster it must be spelled exactly
	// as this node's entry there. It must not be a wildcard such as 0.0.0.0; port 0 binds any
	// free port and advertises it.
	RaftAddr string
	// HTTPAddr is the host:port the API binds.
	HTTPAddr string
	// HTTPAdvertise is the host:port other nodes and clients reach the API at; empty means
	// HTTPAddr as spelled (port 0: the port bound), which then must not be a wildcard such as
	// 0.0.0.0.
	HTTPAdvertise string
	// DataDir holds the log and stable store (DataDir/wal) and the snapshots
	// (DataDir/snapshots).
	DataDir string
	// Cluster is the configuration every listed node bootstraps with; a restarted node finds
	// its stores non-empty and skips it. Nil with Join: the node bootstraps nothing and asks
	// to be added. Nil without Join: a single-node cluster of this node.
	Cluster []raft.Server
	// Join is the HTTP address of any member; the node asks it (and it asks the leader) to
	// add this node as a voter.
	Join string
	// ForceBootstrap skips the check that refuses to bootstrap an empty data directory when
	// a peer of Cluster runs a cluster in which this node already ran (ErrLostData).
	ForceBootstrap bool
	// Raft is the base raft configuration (timeouts, snapshot policy); nil means
	// raft.DefaultConfig(). LocalID and Logger are filled in.
	Raft *raft.Config
	// Server configures the API; ID and HTTPAddr are filled in.
	Server ServerConfig
	// NoSync turns off fsync in the log store (tests only: a machine crash may lose
	// acknowledged writes).
	NoSync bool
	// Logger receives every log of the node; nil means hclog at Info on stderr.
	Logger hclog.Logger
	// TLS, if set, turns on mutual TLS between the nodes and HTTPS for the API. It must hold
	// this node's certificate, the cluster CA as RootCAs and ClientCAs, and ClientAuth
	// tls.RequireAndVerifyClientCert: the raft transport uses it as it is, so a peer without
	// a certificate signed by the CA is refused in the handshake. The API asks for a client
	// certificate but accepts clients without one (curl with the CA only); a client that
	// presents one must present a valid one.
	TLS *tls.Config
	// NewTransport, if set, builds the raft transport instead of the default TCP (or TLS)
	// transport; dev mode uses it to put a layer under the nodes that can cut them off. Such
	// a transport answers no bootstrap probes (see ForceBootstrap) and ignores TLS.
	NewTransport func(bindAddr string, opts tcp.Options) (*tcp.Transport, error)
}

// Node is a running raftkv node: a raft.Raft over a tcp transport, a wal store and a file
// snapshot store, with the FSM and the HTTP API.
//
// Goroutines (all exit in Close): the HTTP server's, and the announcer, which registers this
// node's HTTP address in the replicated state (joining the cluster first with Join) and
// exits once it is registered.
type Node struct {
	conf   NodeConfig
	logger hclog.Logger
	raft   *raft.Raft
	fsm    *FSM
	store  *wal.Store
	snaps  *raft.FileSnapshotStore // closed after raft, like store: it holds a directory lock
	// probeRaft is raft once it runs, for the probe answer the transport's sniffers give.
	probeRaft atomic.Pointer[raft.Raft]
	server    *Server
	http      *http.Server
	httpAddr  string // advertised
	raftAddr  raft.ServerAddress

	// The announcer's outcome, for /status and JoinFailed; joinMu guards the three.
	joinMu     sync.Mutex
	join       *JoinState
	joinErr    error
	joinFailed chan struct{} // closed (under joinMu) when the join can never succeed

	ctx       context.Context // cancelled by Close: stops the announcer
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// StartNode binds the node's ports, opens its stores, bootstraps when it should and starts
// Raft and the API. On error everything opened so far is closed again.
func StartNode(conf NodeConfig) (*Node, error) {
	if err := checkNodeConfig(conf); err != nil {
		return nil, err
	}
	if conf.Logger == nil {
		conf.Logger = hclog.New(&hclog.LoggerOptions{Name: "raftkv"})
	}
	n := &Node{conf: conf, logger: conf.Logger.With("server", string(conf.ID)), fsm: NewFSM(),
		join: &JoinState{State: "joining"}, joinFailed: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	var undo []func()
	fail := func(err error) (*Node, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		n.cancel()
		return nil, err
	}
	ln, err := n.listenHTTP()
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { _ = ln.Close() })
	trans, err := n.newTransport()
	if err != nil {
		return fail(fmt.Errorf("raft transport on %s: %w", conf.RaftAddr, err))
	}
	undo = append(undo, func() { _ = trans.Close() })
	if err := n.openStore(); err != nil {
		return fail(err)
	}
	undo = append(undo, func() { _ = n.store.Close() })
	if err := n.startRaft(trans); err != nil {
		if n.snaps != nil {
			_ = n.snaps.Close()
		}
		return fail(err)
	}
	n.startAPI(ln)
	return n, nil
}

// newTransport binds the raft transport: TCP, or mutual TLS with conf.TLS.
func (n *Node) newTransport() (*tcp.Transport, error) {
	opts := tcp.Options{Logger: n.logger.Named("tcp")}
	if n.conf.NewTransport != nil {
		return n.conf.NewTransport(n.conf.RaftAddr, opts)
	}
	layer, err := newProbeLayer(n.conf.RaftAddr, n.conf.TLS, n.probeAnswer)
	if err != nil {
		return nil, err
	}
	trans, err := tcp.NewTransportWithLayer(layer, opts)
	if err != nil {
		_ = layer.Close()
		return nil, err
	}
	return trans, nil
}

// checkNodeConfig catches mistakes before anything is bound or opened.
func checkNodeConfig(conf NodeConfig) error {
	switch {
	case conf.ID == "":
		return errors.New("the raft ID is empty")
	case conf.DataDir == "":
		return errors.New("the data directory is empty")
	case conf.Cluster != nil && conf.Join != "":
		return errors.New("give either a cluster to bootstrap or a member to join, not both")
	}
	if conf.Cluster == nil {
		return nil
	}
	for _, srv := range conf.Cluster {
		if srv.ID != conf.ID {
			continue
		}
		if string(srv.Address) != conf.RaftAddr {
			return fmt.Errorf("raft address %s differs from %s, the address of id %s in the cluster", conf.RaftAddr, srv.Address, conf.ID)
		}
		return nil
	}
	return fmt.Errorf("id %s is not in the cluster", conf.ID)
}

// listenHTTP binds the API port and settles the advertised address.
func (n *Node) listenHTTP() (net.Listener, error) {
	ln, err := net.Listen("tcp", n.conf.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	n.httpAddr = n.conf.HTTPAdvertise
	if n.httpAddr == "" {
		if n.httpAddr, err = advertised(n.conf.HTTPAddr, ln.Addr()); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("http address %w: set the address to advertise", err)
		}
	}
	return ln, nil
}

// advertised is the address a listener bound at configured is announced under: configured
// as spelled, so that a host name stays a name and peers resolve it whenever they connect
// (the IP it resolves to may change, as a container's does), with the port it was bound to
// when configured asks for any (0). An address no peer can dial (0.0.0.0, ::, no host) is
// an error.
func advertised(configured string, bound net.Addr) (string, error) {
	host, port, err := net.SplitHostPort(configured)
	if err != nil {
		return "", err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		_, boundPort, err := net.SplitHostPort(bound.String())
		if err != nil {
			return "", err
		}
		port = boundPort
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		return "", fmt.Errorf("%s is a wildcard", configured)
	}
	return net.JoinHostPort(host, port), nil
}

// openStore opens the durable log and stable store.
func (n *Node) openStore() error {
	opts := []wal.Option{wal.WithLogger(n.logger.Named("wal"))}
	if n.conf.NoSync {
		opts = append(opts, wal.WithNoSync())
	}
	store, err := wal.Open(filepath.Join(n.conf.DataDir, "wal"), opts...)
	if err != nil {
		return fmt.Errorf("opening the log store: %w", err)
	}
	if rep := store.OpenReport(); rep.TailCut {
		n.logger.Warn("log store cut a torn tail", "file", rep.CutFile, "offset", rep.CutOffset, "bytes", rep.CutBytes)
	}
	n.store = store
	return nil
}

// startRaft bootstraps when this is a fresh node of a listed cluster, then starts Raft.
func (n *Node) startRaft(trans *tcp.Transport) error {
	snaps, err := raft.NewFileSnapshotStore(n.conf.DataDir, 2, n.logger)
	if err != nil {
		return fmt.Errorf("opening the snapshot store: %w", err)
	}
	n.snaps = snaps
	n.raftAddr = trans.LocalAddr()
	rc := raft.DefaultConfig()
	if n.conf.Raft != nil {
		c := *n.conf.Raft
		rc = &c
	}
	rc.LocalID = n.conf.ID
	rc.Logger = n.conf.Logger.Named("raft") // the core adds the server ID itself
	cluster := n.conf.Cluster
	if cluster == nil && n.conf.Join == "" {
		cluster = []raft.Server{{Suffrage: raft.Voter, ID: n.conf.ID, Address: trans.LocalAddr()}}
	}
	if n.conf.Cluster != nil && !n.conf.ForceBootstrap {
		fresh, err := n.freshStores()
		if err != nil {
			return err
		}
		if fresh {
			if err := n.checkFreshBootstrap(n.conf.Cluster); err != nil {
				return err
			}
		}
	}
	if cluster != nil {
		err := raft.BootstrapCluster(rc, n.store, n.store, snaps, trans, raft.Configuration{Servers: cluster})
		if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrapping: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, n.fsm, n.store, n.store, snaps, trans)
	if err != nil {
		return fmt.Errorf("starting raft: %w", err)
	}
	n.raft = r
	n.probeRaft.Store(r)
	return nil
}

// freshStores reports whether the node has no state at all: no log, no snapshot, no term.
func (n *Node) freshStores() (bool, error) {
	last, err := n.store.LastIndex()
	if err != nil {
		return false, err
	}
	metas, err := n.snaps.List()
	if err != nil {
		return false, err
	}
	return last == 0 && len(metas) == 0, nil
}

// startAPI starts serving HTTP on ln and the announcer.
func (n *Node) startAPI(ln net.Listener) {
	sc := n.conf.Server
	sc.ID, sc.HTTPAddr = n.conf.ID, n.httpAddr
	if sc.Logger == nil {
		sc.Logger = n.logger.Named("http")
	}
	sc.Snapshots, sc.JoinStatus = n.snaps, n.JoinState
	if n.conf.TLS != nil {
		sc.ClientTLS = n.conf.TLS.Clone()
		ln = tls.NewListener(ln, apiTLS(n.conf.TLS))
	}
	n.server = NewServer(n.raft, n.fsm, sc)
	n.http = &http.Server{
		Handler:           n.server.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// A client that trickles its body must not hold a handler for long: the body is
		// bounded by the value limit, so 30 s is generous for any honest client.
		ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute,
		// Room for a classic /set of the largest value, percent-encoded; the handler answers
		// 414 in JSON above MaxURLBytes, and only a header block past this gets Go's
		// plain-text 431.
		MaxHeaderBytes: n.server.MaxURLBytes() + 64<<10,
		ErrorLog:       n.logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	n.wg.Add(2)
	// The HTTP server goroutine: exits when Close shuts the server down.
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			n.logger.Error("http server stopped", "error", err)
		}
	}()
	// The announcer: exits once registered, or when Close cancels n.ctx.
	go func() {
		defer n.wg.Done()
		n.announce()
	}()
}

// apiTLS is the API's server configuration: the node's certificate; a client certificate is
// verified when one is presented (a forwarding node presents its own) but not required, so
// clients need only the CA.
func apiTLS(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	return c
}

// Raft returns the node's raft.Raft.
func (n *Node) Raft() *raft.Raft { return n.raft }

// FSM returns the node's state machine.
func (n *Node) FSM() *FSM { return n.fsm }

// HTTPAddr returns the advertised host:port of the API.
func (n *Node) HTTPAddr() string { return n.httpAddr }

// Close stops the node: the announcer, Raft (which closes the transport; requests waiting on
// it fail at once), the HTTP server (in-flight requests get up to shutdownGrace), and
// finally the store. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		errs := []error{n.raft.Shutdown().Error()}
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		if err := n.http.Shutdown(ctx); err != nil {
			errs = append(errs, n.http.Close())
		}
		cancel()
		n.wg.Wait()
		n.server.Close()
		errs = append(errs, n.snaps.Close(), n.store.Close())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// shutdownGrace is how long Close lets in-flight HTTP requests finish; they fail fast
// anyway once Raft is down.
const shutdownGrace = 2 * time.Second
