package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/cmd/raftkv/kv"
	"github.com/raftkit/raft/wal"
)

// runRecover is "raftkv recover": the offline step of a recovery from a permanent loss of
// quorum (docs/operating.md, "Disaster recovery"). With the node stopped, it opens the node's
// stores and calls raft.RecoverCluster with a configuration in which this node is the only
// voter. Started again as usual, the node elects itself; the other nodes are then wiped and
// added back with --join.
func runRecover(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("raftkv recover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("raft_id", "1", "ID of this node, the survivor that becomes the only voter")
	addr := fs.String("raft_addr", "127.0.0.1:7000", "raft address this node will run with")
	dataDir := fs.String("data_dir", "", "this node's data directory (default ./raftkv-data/node-<raft_id>)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: raftkv recover --raft_id=ID --raft_addr=HOST:PORT --data_dir=DIR")
		fmt.Fprintln(stderr, "Run it on the one survivor with the most up-to-date log, with every node stopped.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("recover: unexpected argument %q", fs.Arg(0))
	}
	if *dataDir == "" {
		*dataDir = filepath.Join("raftkv-data", "node-"+*id)
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return fmt.Errorf("recover: --data_dir: %w", err)
	}
	last, err := recoverNode(raft.ServerID(*id), raft.ServerAddress(*addr), dir)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	fmt.Fprintf(stdout, "recovered node %s in %s: it is now the only voter (last log index %d, term %d).\n"+
		"Start it as usual (its --raft_cluster is ignored now that it has state), then wipe the other\n"+
		"survivors' data directories and start them with --join pointing at its HTTP address.\n", *id, dir, last.Index, last.Term)
	return nil
}

// recoverNode forces the configuration {id: addr, voter} onto the stores in dir and returns
// the configuration entry it appended. The wal's lock refuses a directory a running node holds.
func recoverNode(id raft.ServerID, addr raft.ServerAddress, dir string) (raft.Log, error) {
	store, err := wal.Open(filepath.Join(dir, "wal"))
	if err != nil {
		return raft.Log{}, fmt.Errorf("opening the log store: %w", err)
	}
	defer store.Close()
	last, err := store.LastIndex()
	if err != nil {
		return raft.Log{}, err
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 2, hclog.NewNullLogger())
	if err != nil {
		return raft.Log{}, fmt.Errorf("opening the snapshot store: %w", err)
	}
	defer snaps.Close()
	metas, err := snaps.List()
	if err != nil {
		return raft.Log{}, err
	}
	if last == 0 && len(metas) == 0 {
		return raft.Log{}, fmt.Errorf("%s holds no log and no snapshot: nothing to recover (wrong --data_dir?)", dir)
	}
	conf := raft.DefaultConfig()
	conf.LocalID = id
	conf.Logger = hclog.NewNullLogger()
	// RecoverCluster does not use the transport: the node is offline.
	trans, err := raft.NewInmemNetwork().NewTransport(addr)
	if err != nil {
		return raft.Log{}, err
	}
	defer trans.Close()
	configuration := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: id, Address: addr}}}
	if err := raft.RecoverCluster(conf, kv.NewFSM(), store, store, snaps, trans, configuration); err != nil {
		return raft.Log{}, err
	}
	var entry raft.Log
	last, err = store.LastIndex()
	if err == nil {
		err = store.GetLog(last, &entry)
	}
	return entry, err
}
