package raft_test

// This file is the embedding example of README.md, character for character:
// TestREADME_EmbeddingExampleIsExampleSource keeps the two the same, and Example runs it.

import (
	"errors"
	"io"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/tcp"
	"github.com/raftkit/raft/wal"
)

// counter is a tiny FSM: it sums the numbers it is given.
type counter struct {
	mu  sync.Mutex
	sum int64
}

func (c *counter) Apply(l *raft.Log) any {
	n, _ := strconv.ParseInt(string(l.Data), 10, 64)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sum += n
	return c.sum // handed to the ApplyFuture on the leader
}

// Snapshot must be cheap: capture the state, let Persist do the writing.
func (c *counter) Snapshot() (raft.FSMSnapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return counterSnapshot(c.sum), nil
}

func (c *counter) Restore(r io.ReadCloser) error {
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	c.mu.Lock()
	c.sum = n
	c.mu.Unlock()
	return err
}

func (c *counter) value() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sum
}

type counterSnapshot int64

func (s counterSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write([]byte(strconv.FormatInt(int64(s), 10))); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (s counterSnapshot) Release() {}

// node is one embedded raft node and the stores it owns. The stores outlive the *raft.Raft:
// close them only after Shutdown returned.
type node struct {
	raft  *raft.Raft
	fsm   *counter
	store *wal.Store              // log + term/vote; holds its directory's lock until Close
	snaps *raft.FileSnapshotStore // snapshots; holds its directory's lock until Close
}

// start opens (or reopens) the node's stores in dir and starts it. peers is the configuration
// of a fresh cluster; nil makes a one-node cluster of this node.
func start(id, raftAddr, dir string, peers []raft.Server) (n *node, err error) {
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(id)

	store, err := wal.Open(filepath.Join(dir, "wal")) // fsync on every batch
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			store.Close() // release the lock, or the next start in this process fails
		}
	}()
	snaps, err := raft.NewFileSnapshotStore(dir, 2, nil) // keep 2 snapshots
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			snaps.Close()
		}
	}()
	trans, err := tcp.NewTransport(raftAddr, nil, tcp.Options{})
	if err != nil {
		return nil, err
	}
	if peers == nil {
		peers = []raft.Server{{ID: conf.LocalID, Address: trans.LocalAddr()}}
	}
	// Once, on every initial node with the same peers (or alone with itself); a restart
	// finds state and returns ErrCantBootstrap.
	err = raft.BootstrapCluster(conf, store, store, snaps, trans, raft.Configuration{Servers: peers})
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		trans.Close()
		return nil, err
	}
	fsm := &counter{}
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
	if err != nil {
		trans.Close()
		return nil, err
	}
	return &node{raft: r, fsm: fsm, store: store, snaps: snaps}, nil
}

// add replicates "+k" and returns the sum once the entry is applied on this node.
func (n *node) add(k int) (int64, error) {
	f := n.raft.Apply([]byte(strconv.Itoa(k)), 2*time.Second)
	if err := f.Error(); err != nil {
		// errors.Is(err, raft.ErrNotLeader): not applied; errors.As gives the leader to ask.
		// raft.ErrEnqueueTimeout: not applied.
		// raft.ErrTimeout, raft.ErrLeadershipLost: outcome unknown; it may still commit.
		return 0, err
	}
	return f.Response().(int64), nil // applied on this node, with this result
}

// sum is a linearizable read: ReadIndex confirms the leadership with a quorum and waits until
// the FSM applied everything committed before the call. Nothing is written to the log.
func (n *node) sum() (int64, error) {
	if err := n.raft.ReadIndex(2 * time.Second).Error(); err != nil {
		return 0, err // raft.ErrNotLeader: ask the leader (n.fsm.value() is a stale read)
	}
	return n.fsm.value(), nil
}

// stop shuts the node down, then closes its stores: raft may write to them until Shutdown
// returns, and a restart in the same process needs the directory locks back.
func (n *node) stop() error {
	if err := n.raft.Shutdown().Error(); err != nil {
		return err
	}
	return errors.Join(n.store.Close(), n.snaps.Close())
}
