package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/cmd/raftkv/kv"
	"github.com/raftkit/raft/tcp"
)

// The dev console: in -dev mode, one more HTTP server (http://127.0.0.1:7000/ by default)
// serves the live cluster view with controls to crash, restart, cut off and heal each node.
// It lives outside the nodes, so the page keeps working while any of them is down.

// devCluster is the dev mode's nodes, which the console can crash and restart. A crash is a
// Close (raft shuts down, the HTTP API stops, the stores close), and a restart starts the
// node again from its data directory on the same ports.
type devCluster struct {
	confs     []kv.NodeConfig
	switches  []*devSwitch
	elections kv.ElectionLog
	requestTO time.Duration // the nodes' HTTP request timeout
	client    *http.Client  // the console's writes to the nodes

	opMu sync.Mutex // serializes crash/restart/cut/heal, so two clicks never race

	mu    sync.Mutex // guards nodes
	nodes []*kv.Node // nil while crashed
}

func newDevCluster(requestTimeout time.Duration) *devCluster {
	return &devCluster{requestTO: requestTimeout, client: &http.Client{Timeout: requestTimeout + time.Second}}
}

// add starts one more node with conf, under a switch that can cut it off.
func (c *devCluster) add(conf kv.NodeConfig) error {
	sw := &devSwitch{conns: make(map[net.Conn]struct{})}
	conf.NewTransport = sw.newTransport
	n, err := kv.StartNode(conf)
	if err != nil {
		return err
	}
	c.elections.Watch(n.Raft())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.confs, c.switches, c.nodes = append(c.confs, conf), append(c.switches, sw), append(c.nodes, n)
	return nil
}

// running returns the nodes that are up.
func (c *devCluster) running() []*kv.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var up []*kv.Node
	for _, n := range c.nodes {
		if n != nil {
			up = append(up, n)
		}
	}
	return up
}

// close stops every running node.
func (c *devCluster) close() error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	var errs []error
	for _, n := range c.running() {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}

// view builds the cluster view from the nodes in this process.
func (c *devCluster) view() kv.View {
	c.mu.Lock()
	nodes := append([]*kv.Node(nil), c.nodes...)
	c.mu.Unlock()
	v := kv.View{Controls: true, ElectionTimeoutMillis: c.confs[0].Raft.ElectionTimeout.Milliseconds()}
	for i, n := range nodes {
		conf := c.confs[i]
		var vn kv.ViewNode
		if n == nil {
			vn = kv.ViewNode{ID: string(conf.ID), HTTPAddr: conf.HTTPAddr, State: "down", Error: "crashed"}
		} else {
			vn = kv.RaftViewNode(conf.ID, n.HTTPAddr(), n.Raft())
		}
		vn.RaftAddr, vn.Cut = conf.RaftAddr, c.switches[i].cut.Load()
		v.Nodes = append(v.Nodes, vn)
	}
	kv.FillLag(v.Nodes)
	v.Elections = c.elections.Recent()
	return v
}

// act runs one control action on node id.
func (c *devCluster) act(action, id string) error {
	i := -1
	for j, conf := range c.confs {
		if string(conf.ID) == id {
			i = j
		}
	}
	if i < 0 {
		return fmt.Errorf("no node %q", id)
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	n := c.nodes[i]
	c.mu.Unlock()
	switch action {
	case "crash":
		if n == nil {
			return fmt.Errorf("node %s is already down", id)
		}
		c.setNode(i, nil)
		return n.Close()
	case "restart":
		if n != nil {
			return fmt.Errorf("node %s is running", id)
		}
		n, err := kv.StartNode(c.confs[i])
		if err != nil {
			return err
		}
		c.elections.Watch(n.Raft())
		c.setNode(i, n)
		return nil
	case "cut":
		c.switches[i].setCut(true)
		return nil
	case "heal":
		c.switches[i].setCut(false)
		return nil
	}
	return fmt.Errorf("unknown action %q", action)
}

func (c *devCluster) setNode(i int, n *kv.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i] = n
}

// write PUTs a value under key through the leader (or, with no leader, the first running
// node, which waits for one within its request timeout) and describes the outcome for the
// page.
func (c *devCluster) write(ctx context.Context, key string) (int, string) {
	up := c.running()
	if len(up) == 0 {
		return http.StatusServiceUnavailable, "every node is down"
	}
	via := up[0]
	for _, n := range up {
		if n.Raft().State() == raft.Leader {
			via = n
		}
	}
	url := "http://" + via.HTTPAddr() + "/kv/" + key
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(time.Now().Format(time.TimeOnly)))
	if err != nil {
		return http.StatusInternalServerError, err.Error()
	}
	start := time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		return http.StatusBadGateway, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, fmt.Sprintf("PUT /kv/%s via %s: %s in %v: %s", key, via.HTTPAddr(),
		resp.Status, time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(body)))
}

// handler serves the console: the page, its view, and the controls.
func (c *devCluster) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", kv.ServeUIPage)
	mux.HandleFunc("GET /ui/cluster", func(w http.ResponseWriter, _ *http.Request) { writeConsoleJSON(w, c.view()) })
	mux.HandleFunc("POST /ui/dev/write", func(w http.ResponseWriter, req *http.Request) {
		key := req.URL.Query().Get("key")
		if key == "" {
			key = "console"
		}
		code, msg := c.write(req.Context(), key)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, msg)
	})
	mux.HandleFunc("POST /ui/dev/{action}", func(w http.ResponseWriter, req *http.Request) {
		if err := c.act(req.PathValue("action"), req.URL.Query().Get("id")); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// devConsole is the console's HTTP server.
type devConsole struct {
	srv  *http.Server
	addr string
	done chan struct{} // closed when the serving goroutine returned
}

// startDevConsole listens on addr and serves c's console until close.
func startDevConsole(addr string, c *devCluster) (*devConsole, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dev console on %s: %w", addr, err)
	}
	dc := &devConsole{
		srv:  &http.Server{Handler: c.handler(), ReadHeaderTimeout: 10 * time.Second},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	// The serving goroutine: returns when close shuts the server down.
	go func() {
		defer close(dc.done)
		_ = dc.srv.Serve(ln)
	}()
	return dc, nil
}

// close stops the console and waits for its goroutine.
func (dc *devConsole) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := dc.srv.Shutdown(ctx)
	<-dc.done
	return err
}

// devConsoleAddr is where the console listens: the base port itself (node i uses base+i and
// base+100+i), or a free port with base 0.
func devConsoleAddr(base int) (string, error) {
	if base == 0 {
		return freeLoopbackAddr()
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(base)), nil
}

func writeConsoleJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// devSwitch cuts one node off the network and heals it again. It sits under the node's raft
// transport as its stream layer, so it outlives restarts: a node cut off stays cut off.
type devSwitch struct {
	cut atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open raft connections of the node, both directions
}

// errCutOff is what a cut-off node's dials fail with.
var errCutOff = errors.New("dev: node is cut off")

// newTransport is the node's kv.NodeConfig.NewTransport: TCP under the switch.
func (sw *devSwitch) newTransport(bindAddr string, opts tcp.Options) (*tcp.Transport, error) {
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, fmt.Errorf("tcp: listening on %s: %w", bindAddr, err)
	}
	t, err := tcp.NewTransportWithLayer(&devLayer{Listener: ln, sw: sw}, opts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return t, nil
}

// setCut cuts the node off (closing every open connection) or heals it.
func (sw *devSwitch) setCut(cut bool) {
	sw.cut.Store(cut)
	if !cut {
		return
	}
	sw.mu.Lock()
	conns := sw.conns
	sw.conns = make(map[net.Conn]struct{})
	sw.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// track remembers c until it closes, or closes it at once when the node is cut off.
func (sw *devSwitch) track(c net.Conn) (net.Conn, bool) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.cut.Load() {
		c.Close()
		return nil, false
	}
	tc := &devConn{Conn: c, sw: sw}
	sw.conns[tc] = struct{}{}
	return tc, true
}

func (sw *devSwitch) forget(c net.Conn) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	delete(sw.conns, c)
}

// devLayer is a tcp.StreamLayer over plain TCP that refuses every connection, both ways,
// while its switch is cut.
type devLayer struct {
	net.Listener
	sw *devSwitch
}

// Accept returns the next connection accepted while the node is not cut off.
func (l *devLayer) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := l.sw.track(c); ok {
			return tc, nil
		}
	}
}

// Dial connects to a peer unless the node is cut off.
func (l *devLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if l.sw.cut.Load() {
		return nil, errCutOff
	}
	c, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	tc, ok := l.sw.track(c)
	if !ok {
		return nil, errCutOff
	}
	return tc, nil
}

// devConn forgets itself in its switch when closed.
type devConn struct {
	net.Conn
	sw *devSwitch
}

func (c *devConn) Close() error {
	c.sw.forget(c)
	return c.Conn.Close()
}
