package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/tcp"
	"github.com/raftkit/raft/wal"
)

// node is one in-process cluster member.
type node struct {
	id     raft.ServerID
	raft   *raft.Raft
	fsm    *countingFSM
	trans  raft.Transport
	closer io.Closer // the wal store, or nil
}

// cluster is the in-process cluster under load.
type cluster struct {
	nodes []*node
	dir   string // removed by close when the cluster created it
	owned bool
}

// errNoLeader is returned when no leader is elected in time.
var errNoLeader = errors.New("raftbench: no leader elected")

// newCluster builds, bootstraps and starts the nodes described by cfg. On error it releases
// whatever it built.
func newCluster(cfg config, logger hclog.Logger) (*cluster, error) {
	c := &cluster{dir: cfg.dir}
	if cfg.store == "wal" && c.dir == "" {
		dir, err := os.MkdirTemp("", "raftbench-")
		if err != nil {
			return nil, fmt.Errorf("raftbench: temp dir: %w", err)
		}
		c.dir, c.owned = dir, true
	}
	net := raft.NewInmemNetwork()
	// Nothing is lost on this network, so the timeout only bounds how long a handler may
	// take: a follower's ReadIndex waits for the leader's confirmation round, which a loaded
	// machine can stretch past the 50ms default.
	net.SetTimeout(cfg.timeout)
	var servers []raft.Server
	for i := 0; i < cfg.nodes; i++ {
		n := &node{id: raft.ServerID(fmt.Sprintf("n%d", i+1))}
		c.nodes = append(c.nodes, n)
		var trans raft.Transport
		var err error
		onNode(n.id, func() { trans, err = newTransport(cfg, net, n.id, logger) })
		if err != nil {
			c.close()
			return nil, err
		}
		n.trans = trans
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: trans.LocalAddr()})
	}
	for i, n := range c.nodes {
		if err := c.startNode(cfg, n, int64(i), raft.Configuration{Servers: servers}, logger); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

// newTransport returns a loopback TCP transport or one on the in-memory network.
func newTransport(cfg config, net *raft.InmemNetwork, id raft.ServerID, logger hclog.Logger) (raft.Transport, error) {
	if cfg.transport == "inmem" {
		trans, err := net.NewTransport(raft.ServerAddress("inmem-" + id))
		if err != nil {
			return nil, err
		}
		return trans, nil
	}
	trans, err := tcp.NewTransport("127.0.0.1:0", nil, tcp.Options{Logger: logger.Named("tcp")})
	if err != nil {
		return nil, err
	}
	return trans, nil
}

// startNode opens n's stores, bootstraps them with conf and starts its Raft.
func (c *cluster) startNode(cfg config, n *node, i int64, conf raft.Configuration, logger hclog.Logger) error {
	var logs raft.LogStore
	var stable raft.StableStore
	var snaps raft.SnapshotStore
	if cfg.store == "wal" {
		dir := filepath.Join(c.dir, string(n.id))
		opts := []wal.Option{wal.WithLogger(logger.Named("wal"))}
		if !cfg.fsync {
			opts = append(opts, wal.WithNoSync())
		}
		store, err := wal.Open(filepath.Join(dir, "wal"), opts...)
		if err != nil {
			return err
		}
		n.closer = store
		fileSnaps, err := raft.NewFileSnapshotStore(dir, 2, logger)
		if err != nil {
			return err
		}
		logs, stable, snaps = store, store, fileSnaps
	} else {
		store := raft.NewInmemStore()
		logs, stable, snaps = store, store, raft.NewInmemSnapshotStore()
	}
	rc := raft.DefaultConfig()
	rc.LocalID = n.id
	rc.Logger = logger
	if cfg.maxAppend > 0 {
		rc.MaxAppendEntries = cfg.maxAppend
	}
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = cfg.heartbeat, cfg.heartbeat, cfg.heartbeat
	rc.RandSeed = cfg.seed + i + 1
	rc.LeaseReads = cfg.read == "lease"
	if err := raft.BootstrapCluster(rc, logs, stable, snaps, nil, conf); err != nil {
		return fmt.Errorf("raftbench: bootstrap %s: %w", n.id, err)
	}
	n.fsm = &countingFSM{}
	var r *raft.Raft
	var err error
	onNode(n.id, func() { r, err = raft.NewRaft(rc, n.fsm, logs, stable, snaps, n.trans) })
	if err != nil {
		return fmt.Errorf("raftbench: start %s: %w", n.id, err)
	}
	n.raft = r
	return nil
}

// onNode runs f with the profiler label node=id, which every goroutine f starts inherits (a
// node's main loop, replicators, transport): with -cpuprofile, `go tool pprof -tagfocus
// node=n1` shows what one node cost, e.g. the leader's share of follower reads.
func onNode(id raft.ServerID, f func()) {
	pprof.Do(context.Background(), pprof.Labels("node", string(id)), func(context.Context) { f() })
}

// leader waits up to timeout for a node that considers itself leader.
func (c *cluster) leader(timeout time.Duration) (*raft.Raft, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		for _, n := range c.nodes {
			if n.raft != nil && n.raft.State() == raft.Leader {
				return n.raft, nil
			}
		}
		<-tick.C
	}
	return nil, errNoLeader
}

// close shuts every node down, closes the stores and removes a directory it created.
func (c *cluster) close() error {
	var errs []error
	for _, n := range c.nodes {
		if n.raft != nil {
			errs = append(errs, n.raft.Shutdown().Error())
		} else if n.trans != nil {
			errs = append(errs, n.trans.Close())
		}
		if n.closer != nil {
			errs = append(errs, n.closer.Close())
		}
	}
	if c.owned {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}

// countingFSM counts applied commands and their bytes; its snapshot is those two numbers.
type countingFSM struct {
	applied atomic.Uint64
	bytes   atomic.Uint64
}

// Apply implements raft.FSM.
func (f *countingFSM) Apply(l *raft.Log) any {
	f.applied.Add(1)
	f.bytes.Add(uint64(len(l.Data)))
	return nil
}

// Snapshot implements raft.FSM.
func (f *countingFSM) Snapshot() (raft.FSMSnapshot, error) {
	return countingSnapshot{applied: f.applied.Load(), bytes: f.bytes.Load()}, nil
}

// Restore implements raft.FSM.
func (f *countingFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var buf [16]byte
	if _, err := io.ReadFull(rc, buf[:]); err != nil {
		return fmt.Errorf("raftbench: reading snapshot: %w", err)
	}
	f.applied.Store(binary.BigEndian.Uint64(buf[:8]))
	f.bytes.Store(binary.BigEndian.Uint64(buf[8:]))
	return nil
}

type countingSnapshot struct{ applied, bytes uint64 }

// Persist implements raft.FSMSnapshot.
func (s countingSnapshot) Persist(sink raft.SnapshotSink) error {
	var buf [16]byte
	binary.BigEndian.PutUint64(buf[:8], s.applied)
	binary.BigEndian.PutUint64(buf[8:], s.bytes)
	if _, err := sink.Write(buf[:]); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (countingSnapshot) Release() {}
