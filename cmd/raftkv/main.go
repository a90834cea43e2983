// Command raftkv is a node of a replicated key/value store built on raftkit: the example to
// read (and copy) for embedding the library in a service. See README.md for the HTTP API and a
// session to paste.
//
//	raftkv --raft_id=1 --raft_addr=127.0.0.1:7000 --http_addr=127.0.0.1:7001 \
//	    --raft_cluster=1/127.0.0.1:7000,2/127.0.0.1:8000,3/127.0.0.1:9000
//	raftkv -dev     # or: raftkv dev; three nodes in one process, on loopback
//
// Any startup problem (a bad flag value, a port in use, a locked data directory) prints one
// line "raftkv: ..." on stderr and exits with status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/cmd/raftkv/kv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2) // the flag package already printed the problem and the usage
	default:
		// One line, whatever the error says.
		fmt.Fprintln(os.Stderr, "raftkv: "+strings.ReplaceAll(err.Error(), "\n", "; "))
		os.Exit(1)
	}
}

// errUsage marks a command line the flag package refused (and reported).
var errUsage = errors.New("bad command line")

// options are the parsed command-line flags.
type options struct {
	httpAddr, httpAdvertise, raftAddr, raftID, raftCluster, dataDir, join string

	heartbeat, election, leaderLease, commit, requestTimeout, snapshotInterval time.Duration
	snapshotThreshold, trailingLogs                                            uint64
	maxValueBytes                                                              int

	logLevel    string
	logLevelSet bool
	dev         bool
	devBasePort int
}

// parseFlags reads args. "dev" as the first argument is the same as -dev.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("raftkv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.httpAddr, "http_addr", "127.0.0.1:7001", "host:port the HTTP API listens on")
	fs.StringVar(&o.httpAdvertise, "http_advertise", "", "host:port others reach the HTTP API at (default: http_addr)")
	fs.StringVar(&o.raftAddr, "raft_addr", "127.0.0.1:7000", "host:port of the raft transport, as spelled in raft_cluster")
	fs.StringVar(&o.raftID, "raft_id", "1", "this node's raft server ID")
	fs.StringVar(&o.raftCluster, "raft_cluster", "", "id/host:port,... of every voter; each listed node bootstraps with it")
	fs.StringVar(&o.dataDir, "data_dir", "", "directory of the log, stable store and snapshots (default ./raftkv-data/node-<raft_id>)")
	fs.StringVar(&o.join, "join", "", "HTTP host:port of a member: join that cluster instead of bootstrapping")
	fs.DurationVar(&o.heartbeat, "heartbeat_timeout", time.Second, "follower timeout without a leader before an election")
	fs.DurationVar(&o.election, "election_timeout", time.Second, "candidate timeout without a winner")
	fs.DurationVar(&o.leaderLease, "leader_lease_timeout", 0, "a leader without quorum contact for this long steps down (default: heartbeat_timeout/2)")
	fs.DurationVar(&o.commit, "commit_timeout", 50*time.Millisecond, "idle heartbeat interval that also spreads the commit index")
	fs.DurationVar(&o.requestTimeout, "request_timeout", kv.DefaultRequestTimeout, "bound on every HTTP request, leader wait and forwarding included")
	fs.DurationVar(&o.snapshotInterval, "snapshot_interval", 2*time.Minute, "how often to check snapshot_threshold")
	fs.Uint64Var(&o.snapshotThreshold, "snapshot_threshold", 8192, "entries applied since the last snapshot that trigger a new one")
	fs.Uint64Var(&o.trailingLogs, "trailing_logs", 10240, "entries kept in the log after a snapshot")
	fs.IntVar(&o.maxValueBytes, "max_value_bytes", kv.DefaultMaxValueBytes, "largest value accepted (larger: 413)")
	fs.StringVar(&o.logLevel, "log_level", "info", "trace, debug, info, warn or error (dev mode default: warn)")
	fs.BoolVar(&o.dev, "dev", false, "run a 3-node cluster on loopback in this process, in a temporary directory")
	fs.IntVar(&o.devBasePort, "dev_base_port", 7000, "dev mode: node i serves HTTP on base+i and raft on base+100+i; 0 picks free ports")
	parse := func(args []string) error {
		err := fs.Parse(args)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return err
	}
	if err := parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 && fs.Arg(0) == "dev" {
		o.dev = true
		if err := parse(fs.Args()[1:]); err != nil {
			return nil, err
		}
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { o.logLevelSet = o.logLevelSet || f.Name == "log_level" })
	if o.dataDir == "" {
		o.dataDir = filepath.Join("raftkv-data", "node-"+o.raftID)
	}
	return o, nil
}

// run parses args and runs a node (or the dev cluster) until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.dev && !o.logLevelSet {
		o.logLevel = "warn"
	}
	if hclog.LevelFromString(o.logLevel) == hclog.NoLevel {
		return fmt.Errorf("unknown log level %q", o.logLevel)
	}
	sink, err := setupMetrics()
	if err != nil {
		return err
	}
	if o.dev {
		return runDev(ctx, o, sink, stdout, stderr)
	}
	return runNode(ctx, o, sink, stderr)
}

// setupMetrics sends go-metrics (the core's and the runtime's) to an in-memory sink that GET
// /metrics shows. go-metrics keeps its sink process-wide, so dev mode's three nodes share it.
func setupMetrics() (*metrics.InmemSink, error) {
	sink := metrics.NewInmemSink(10*time.Second, time.Minute)
	conf := metrics.DefaultConfig("raftkv")
	conf.EnableHostname = false
	if _, err := metrics.NewGlobal(conf, sink); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return sink, nil
}

// nodeConfig builds the configuration of one node from the flags.
func (o *options) nodeConfig(id, raftAddr, httpAddr, dataDir string, sink *metrics.InmemSink, logOut io.Writer) kv.NodeConfig {
	rc := raft.DefaultConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.CommitTimeout = o.heartbeat, o.election, o.commit
	rc.LeaderLeaseTimeout = o.leaderLease
	if rc.LeaderLeaseTimeout == 0 {
		rc.LeaderLeaseTimeout = o.heartbeat / 2
	}
	rc.SnapshotInterval, rc.SnapshotThreshold, rc.TrailingLogs = o.snapshotInterval, o.snapshotThreshold, o.trailingLogs
	return kv.NodeConfig{
		ID:            raft.ServerID(id),
		RaftAddr:      raftAddr,
		HTTPAddr:      httpAddr,
		HTTPAdvertise: o.httpAdvertise,
		DataDir:       dataDir,
		Join:          o.join,
		Raft:          rc,
		Server:        kv.ServerConfig{RequestTimeout: o.requestTimeout, MaxValueBytes: o.maxValueBytes, Metrics: sink},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "raftkv", Level: hclog.LevelFromString(o.logLevel), Output: logOut,
		}),
	}
}

// runNode runs the one node the flags describe until ctx ends.
func runNode(ctx context.Context, o *options, sink *metrics.InmemSink, stderr io.Writer) error {
	conf := o.nodeConfig(o.raftID, o.raftAddr, o.httpAddr, o.dataDir, sink, stderr)
	if o.raftCluster != "" {
		cluster, err := kv.ParseCluster(o.raftCluster)
		if err != nil {
			return fmt.Errorf("--raft_cluster: %w", err)
		}
		conf.Cluster = cluster
	}
	if err := checkRaftConfig(conf.Raft); err != nil {
		return err
	}
	n, err := kv.StartNode(conf)
	if err != nil {
		return err
	}
	conf.Logger.Info("raftkv node started", "node", o.raftID, "http_addr", n.HTTPAddr(), "raft_addr", o.raftAddr, "data_dir", o.dataDir)
	select {
	case <-ctx.Done():
	case <-n.Raft().Stopped():
		// Raft stopped itself after a local failure (a disk error): serving 503s forever
		// would hide it, so the process exits with the cause.
		if cause := n.Raft().ShutdownCause(); cause != nil {
			_ = n.Close()
			return fmt.Errorf("raft stopped: %w", cause)
		}
	}
	conf.Logger.Info("shutting down")
	return n.Close()
}

// checkRaftConfig validates the timeouts from the flags before any port is bound.
func checkRaftConfig(rc *raft.Config) error {
	c := *rc
	c.LocalID = "check"
	return raft.ValidateConfig(&c)
}
