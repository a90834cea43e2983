// Command raftbench is a load generator for raftkit. It starts an N-node cluster in this
// process (over loopback TCP or the in-memory transport, on wal or in-memory stores), runs C
// concurrent clients that each apply S-byte commands one at a time through the leader for a
// duration or a number of operations, and prints throughput and latency percentiles.
//
//	go run ./cmd/raftbench -transport tcp -store wal -clients 16 -size 128 -duration 10s
//
// Command payloads are deterministic: the same -seed sends the same bytes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

// config is the parsed command line.
type config struct {
	nodes     int
	transport string // "inmem" or "tcp"
	store     string // "inmem" or "wal"
	fsync     bool
	dir       string
	clients   int
	size      int
	duration  time.Duration
	ops       int
	timeout   time.Duration
	maxAppend int
	heartbeat time.Duration
	seed      int64
	logLevel  string
	read      string // "": apply commands; else a read kind (see readKinds)
}

// errUsage marks a bad command line.
var errUsage = errors.New("raftbench: invalid flags")

// parseFlags parses args (without the program name) into a config.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("raftbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.nodes, "nodes", 3, "cluster size")
	fs.StringVar(&cfg.transport, "transport", "tcp", "transport: tcp (loopback) or inmem")
	fs.StringVar(&cfg.store, "store", "inmem", "log and stable store: inmem or wal")
	fs.BoolVar(&cfg.fsync, "fsync", true, "wal: fsync every batch")
	fs.StringVar(&cfg.dir, "dir", "", "wal: data directory (default: a temporary one, removed at exit)")
	fs.IntVar(&cfg.clients, "clients", 16, "concurrent clients, each with one apply in flight")
	fs.IntVar(&cfg.size, "size", 128, "command size in bytes")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to apply (ignored with -ops)")
	fs.IntVar(&cfg.ops, "ops", 0, "stop after this many applies in total (0: run for -duration)")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "timeout of one apply")
	fs.IntVar(&cfg.maxAppend, "max-append-entries", 64, "raft MaxAppendEntries: the largest batch")
	fs.DurationVar(&cfg.heartbeat, "heartbeat-timeout", time.Second, "raft HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout")
	fs.Int64Var(&cfg.seed, "seed", 1, "seed of the payloads and election timeouts")
	fs.StringVar(&cfg.logLevel, "log-level", "error", "log level of the nodes")
	fs.StringVar(&cfg.read, "read", "", "read instead of write: leader (ReadIndex on the leader), follower (ReadIndex on followers), lease (leader lease reads) or log (reads applied through the log)")
	if err := fs.Parse(args); err != nil {
		return cfg, fmt.Errorf("%w: %w", errUsage, err)
	}
	if err := cfg.validate(); err != nil {
		fs.Usage()
		return cfg, err
	}
	return cfg, nil
}

func (c config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
	}
	switch {
	case c.nodes < 1:
		return bad("-nodes %d must be at least 1", c.nodes)
	case c.transport != "tcp" && c.transport != "inmem":
		return bad("-transport %q is not tcp or inmem", c.transport)
	case c.store != "wal" && c.store != "inmem":
		return bad("-store %q is not wal or inmem", c.store)
	case c.clients < 1:
		return bad("-clients %d must be at least 1", c.clients)
	case c.size < 1 || c.size > 1<<20:
		return bad("-size %d must be in [1, 1048576]", c.size)
	case c.ops < 0 || (c.ops == 0 && c.duration <= 0):
		return bad("give a positive -duration or -ops")
	case c.timeout <= 0:
		return bad("-timeout must be positive")
	case c.heartbeat < 5*time.Millisecond:
		return bad("-heartbeat-timeout must be at least 5ms")
	case c.read != "" && !slices.Contains(readKinds, c.read):
		return bad("-read %q is not one of %v", c.read, readKinds)
	case c.read == "follower" && c.nodes < 2:
		return bad("-read follower needs at least 2 nodes")
	}
	return nil
}

// run starts the cluster, runs the load and writes the report to stdout.
func run(cfg config, stdout, stderr io.Writer) error {
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.LevelFromString(cfg.logLevel), Output: stderr})
	c, err := newCluster(cfg, logger)
	if err != nil {
		return err
	}
	newOp := applyOps(cfg)
	if cfg.read != "" {
		newOp = c.readOps(cfg)
		if err := c.waitLeaderKnown(10 * time.Second); err != nil {
			_ = c.close()
			return err
		}
	}
	res, loadErr := runLoad(cfg, func() (*raft.Raft, error) { return c.leader(10 * time.Second) }, newOp)
	closeErr := c.close()
	if loadErr != nil {
		return loadErr
	}
	printReport(stdout, cfg, res)
	return closeErr
}

// printReport writes a run's parameters and results.
func printReport(w io.Writer, cfg config, res result) {
	store := cfg.store
	if cfg.store == "wal" {
		store += map[bool]string{true: " (fsync)", false: " (no fsync)"}[cfg.fsync]
	}
	what := fmt.Sprintf("%d B commands", cfg.size)
	if cfg.read != "" {
		what = cfg.read + " reads"
	}
	fmt.Fprintf(w, "raftbench: %d nodes, transport %s, store %s, %d clients, %s\n",
		cfg.nodes, cfg.transport, store, cfg.clients, what)
	secs := res.elapsed.Seconds()
	fmt.Fprintf(w, "ops:        %d in %.2fs (%d errors)\n", res.ops, secs, res.errors)
	fmt.Fprintf(w, "throughput: %.0f ops/s, %.2f MB/s\n", float64(res.ops)/secs, float64(res.bytes)/secs/1e6)
	fmt.Fprintf(w, "latency:    p50 %v  p90 %v  p99 %v  max %v\n",
		round(percentile(res.latency, 0.50)), round(percentile(res.latency, 0.90)),
		round(percentile(res.latency, 0.99)), round(percentile(res.latency, 1)))
}

// round keeps three significant digits or so of a latency.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err == nil {
		err = run(cfg, os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
