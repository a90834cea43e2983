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
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	prommetrics "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	logJSON     bool
	dev         bool
	devBasePort int

	tlsCert, tlsKey, tlsCA string
	tokenFile              string
	forceBootstrap         bool

	tls   *tls.Config // built from the tls_* flags by loadSecurity
	token string      // from token_file or RAFTKV_TOKEN
}

// tokenEnv names the environment variable that may hold the shared admin token.
const tokenEnv = "RAFTKV_TOKEN"

// maxValueLimit is the largest --max_value_bytes: an entry must fit the transport's 8 MiB
// frame with room to spare.
const maxValueLimit = 4 << 20

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
	fs.DurationVar(&o.heartbeat, "heartbeat_timeout", time.Second, "follower timeout without a leader before an election (default: election_timeout if that is set, else 1s)")
	fs.DurationVar(&o.election, "election_timeout", time.Second, "candidate timeout without a winner (default: heartbeat_timeout if that is set, else 1s)")
	fs.DurationVar(&o.leaderLease, "leader_lease_timeout", 0, "a leader without quorum contact for this long steps down (default: heartbeat_timeout/2)")
	fs.DurationVar(&o.commit, "commit_timeout", 50*time.Millisecond, "idle heartbeat interval that also spreads the commit index")
	fs.DurationVar(&o.requestTimeout, "request_timeout", kv.DefaultRequestTimeout, "bound on every HTTP request, leader wait and forwarding included")
	fs.DurationVar(&o.snapshotInterval, "snapshot_interval", 2*time.Minute, "how often to check snapshot_threshold")
	fs.Uint64Var(&o.snapshotThreshold, "snapshot_threshold", 8192, "entries applied since the last snapshot that trigger a new one")
	fs.Uint64Var(&o.trailingLogs, "trailing_logs", 10240, "entries kept in the log after a snapshot")
	fs.IntVar(&o.maxValueBytes, "max_value_bytes", kv.DefaultMaxValueBytes, "largest value accepted (larger: 413)")
	fs.StringVar(&o.logLevel, "log_level", "info", "trace, debug, info, warn or error (dev mode default: warn)")
	fs.BoolVar(&o.logJSON, "log_json", false, "log one JSON object per line instead of text")
	fs.StringVar(&o.tlsCert, "tls_cert", "", "PEM certificate of this node: mutual TLS between nodes, HTTPS for the API (with tls_key and tls_ca)")
	fs.StringVar(&o.tlsKey, "tls_key", "", "PEM private key of tls_cert")
	fs.StringVar(&o.tlsCA, "tls_ca", "", "PEM CA certificate(s) that sign every node's certificate")
	fs.StringVar(&o.tokenFile, "token_file", "", "file holding the shared token required on admin and membership endpoints (or set "+tokenEnv+")")
	fs.BoolVar(&o.forceBootstrap, "force_bootstrap", false, "bootstrap an empty data directory even when a peer of raft_cluster runs a cluster in which this node already ran (unsafe: see README)")
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
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.logLevelSet = set["log_level"]
	// One timeout given alone sets both: --heartbeat_timeout=2s must not fail because the
	// election timeout stayed at 1s.
	switch {
	case set["heartbeat_timeout"] && !set["election_timeout"]:
		o.election = o.heartbeat
	case set["election_timeout"] && !set["heartbeat_timeout"]:
		o.heartbeat = o.election
	}
	if o.dataDir == "" {
		o.dataDir = filepath.Join("raftkv-data", "node-"+o.raftID)
	}
	return o, o.check()
}

// check refuses flag values no node could run with.
func (o *options) check() error {
	switch {
	case o.maxValueBytes <= 0 || o.maxValueBytes > maxValueLimit:
		return fmt.Errorf("--max_value_bytes=%d: want 1 to %d", o.maxValueBytes, maxValueLimit)
	case o.requestTimeout <= 0:
		return fmt.Errorf("--request_timeout=%v: want a positive duration", o.requestTimeout)
	case o.commit <= 0:
		return fmt.Errorf("--commit_timeout=%v: want a positive duration", o.commit)
	case o.leaderLease < 0:
		return fmt.Errorf("--leader_lease_timeout=%v: want a positive duration", o.leaderLease)
	case (o.tlsCert == "") != (o.tlsKey == "") || (o.tlsCert == "") != (o.tlsCA == ""):
		return errors.New("--tls_cert, --tls_key and --tls_ca go together: give all three or none")
	case o.dev && o.tlsCert != "":
		return errors.New("-dev runs on loopback without TLS: drop the --tls_* flags")
	}
	return nil
}

// run parses args and runs a node (or the dev cluster, or the recover command) until ctx
// ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "recover" {
		return runRecover(args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if err := o.loadSecurity(); err != nil {
		return err
	}
	if o.dev && !o.logLevelSet {
		o.logLevel = "warn"
	}
	if hclog.LevelFromString(o.logLevel) == hclog.NoLevel {
		return fmt.Errorf("unknown log level %q", o.logLevel)
	}
	sink, err := setupMetrics(ctx)
	if err != nil {
		return err
	}
	if o.dev {
		return runDev(ctx, o, sink, stdout, stderr)
	}
	return runNode(ctx, o, sink, stderr)
}

// setupMetrics sends go-metrics (the core's and the runtime's) to go-metrics' Prometheus
// sink, and returns the handler that serves it in the Prometheus text format at GET
// /metrics. Names are the README's with dots turned into underscores (raft.commit.commit_time
// is raft_commit_commit_time); timers are summaries in milliseconds, counters are cumulative.
// go-metrics keeps its sink process-wide, so dev mode's three nodes share it.
func setupMetrics(ctx context.Context) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	sink, err := prommetrics.NewPrometheusSinkFrom(prommetrics.PrometheusOpts{
		// A gauge nobody updates for this long (a peer that left) disappears.
		Expiration: time.Minute,
		Registerer: reg,
		Name:       "raftkv",
	})
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	conf := metrics.DefaultConfig("")
	conf.EnableHostname = false
	conf.EnableServiceLabel = false
	if _, err := metrics.NewGlobal(conf, sink); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}), nil
}

// nodeConfig builds the configuration of one node from the flags.
func (o *options) nodeConfig(id, raftAddr, httpAddr, dataDir string, sink http.Handler, logOut io.Writer) kv.NodeConfig {
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
		Server: kv.ServerConfig{
			RequestTimeout: o.requestTimeout, MaxValueBytes: o.maxValueBytes, Metrics: sink, Token: o.token,
		},
		TLS:    o.tls,
		Logger: o.logger(logOut),
	}
}

// logger builds the process's logger from --log_level and --log_json.
func (o *options) logger(out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name: "raftkv", Level: hclog.LevelFromString(o.logLevel), Output: out, JSONFormat: o.logJSON,
	})
}

// runNode runs the one node the flags describe until ctx ends.
func runNode(ctx context.Context, o *options, sink http.Handler, stderr io.Writer) error {
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return fmt.Errorf("--data_dir: %w", err)
	}
	conf := o.nodeConfig(o.raftID, o.raftAddr, o.httpAddr, dataDir, sink, stderr)
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
	conf.ForceBootstrap = o.forceBootstrap
	n, err := kv.StartNode(conf)
	if err != nil {
		return err
	}
	conf.Logger.Info("raftkv node started", "node", o.raftID, "http_addr", n.HTTPAddr(), "raft_addr", o.raftAddr,
		"data_dir", dataDir, "tls", o.tls != nil, "token", o.token != "")
	select {
	case <-ctx.Done():
	case <-n.JoinFailed():
		_ = n.Close()
		return n.JoinErr()
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
