// Command raftbench is a load generator for raftkit. It starts an N-node cluster in this
// process (over loopback TCP or the in-memory transport, on wal or in-memory stores), runs C
// concurrent clients that each apply S-byte commands one at a time through the leader for a
// duration or a number of operations, and prints throughput and latency percentiles.
//
//	go run ./cmd/raftbench -transport tcp -store wal -clients 16 -size 128 -duration 10s
//
// With -json it prints one JSON line per run instead, with CPU time and allocations per
// operation, peak RSS and heap, and the latency of each proposal stage as the leader reports
// it (queued, written locally, committed, applied). -matrix runs every combination of
// -matrix-transports, -matrix-stores, -matrix-sizes and -matrix-clients, each in a fresh child
// process so that peak RSS belongs to that run alone, and prints one JSON line per run:
//
//	go run ./cmd/raftbench -matrix -store wal -duration 10s > results.jsonl
//
// Command payloads are deterministic: the same -seed sends the same bytes.
package main

import (
	"encoding/json"
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
	json      bool
	cpuProf   string
	memProf   string
	blockProf string
	mutexProf string

	matrix           bool
	matrixTransports string // comma-separated axes of -matrix
	matrixStores     string
	matrixSizes      string
	matrixClients    string
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
	fs.IntVar(&cfg.maxAppend, "max-append-entries", 0, "raft MaxAppendEntries, the most entries in a batch (0: the library's default)")
	fs.DurationVar(&cfg.heartbeat, "heartbeat-timeout", time.Second, "raft HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout")
	fs.Int64Var(&cfg.seed, "seed", 1, "seed of the payloads and election timeouts")
	fs.StringVar(&cfg.logLevel, "log-level", "error", "log level of the nodes")
	fs.StringVar(&cfg.read, "read", "", "read instead of write: leader (ReadIndex on the leader), follower (ReadIndex on followers), lease (leader lease reads) or log (reads applied through the log)")
	fs.BoolVar(&cfg.json, "json", false, "print the result as one JSON line")
	fs.StringVar(&cfg.cpuProf, "cpuprofile", "", "write a CPU profile of the load phase to this file")
	fs.StringVar(&cfg.memProf, "memprofile", "", "write a heap profile (allocations) at the end of the load to this file")
	fs.StringVar(&cfg.blockProf, "blockprofile", "", "write a profile of where goroutines blocked during the load to this file (slows the run)")
	fs.StringVar(&cfg.mutexProf, "mutexprofile", "", "write a profile of contended locks during the load to this file (runtime locks too with GODEBUG=runtimecontentionstacks=1)")
	fs.BoolVar(&cfg.matrix, "matrix", false, "run every combination of the -matrix-* axes, each in a child process, printing JSON lines")
	fs.StringVar(&cfg.matrixTransports, "matrix-transports", "tcp", "-matrix: transports, comma-separated")
	fs.StringVar(&cfg.matrixStores, "matrix-stores", "wal", "-matrix: stores, comma-separated")
	fs.StringVar(&cfg.matrixSizes, "matrix-sizes", "128,1024,4096", "-matrix: command sizes in bytes, comma-separated")
	fs.StringVar(&cfg.matrixClients, "matrix-clients", "1,16,256,1024", "-matrix: client counts, comma-separated")
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
	if c.matrix {
		if _, err := c.matrixCells(); err != nil {
			return err
		}
	}
	return nil
}

// run starts the cluster, runs the load and writes the report to stdout.
func run(cfg config, stdout, stderr io.Writer) error {
	if cfg.matrix {
		return runMatrix(cfg, stdout, stderr)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.LevelFromString(cfg.logLevel), Output: stderr})
	stages, err := installStageSink()
	if err != nil {
		return err
	}
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
		// A new leader takes no lease before HeartbeatTimeout passed since it won: wait that
		// long (for every kind alike) so that -read lease measures leases, not rounds.
		<-time.After(cfg.heartbeat)
	}
	stopProfile, err := startProfile(cfg)
	if err != nil {
		return errors.Join(err, c.close())
	}
	m := startMeter()
	res, loadErr := runLoad(cfg, func() (*raft.Raft, error) { return c.leader(10 * time.Second) }, newOp)
	use := m.stop()
	if err := stopProfile(); err != nil {
		return errors.Join(err, c.close())
	}
	closeErr := c.close()
	if loadErr != nil {
		return loadErr
	}
	rep := newReport(cfg, res, use, stages.summary())
	if cfg.read != "" {
		reads := stages.readSummary()
		rep.Reads = &reads
	}
	if cfg.json {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	return closeErr
}

// report is one run's parameters and results; -json prints it as one line.
type report struct {
	Nodes     int    `json:"nodes"`
	Transport string `json:"transport"`
	Store     string `json:"store"`
	Fsync     bool   `json:"fsync"`
	Clients   int    `json:"clients"`
	Size      int    `json:"size"`
	Read      string `json:"read,omitempty"` // the read kind of -read; empty for applies

	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	MBPerSec  float64 `json:"mb_per_sec"`
	P50us     float64 `json:"p50_us"`
	P90us     float64 `json:"p90_us"`
	P99us     float64 `json:"p99_us"`
	MaxUs     float64 `json:"max_us"`

	// Whole process: three nodes and the clients.
	CPUusPerOp      float64 `json:"cpu_us_per_op"`
	CPUCores        float64 `json:"cpu_cores"` // CPU time over wall time
	AllocsPerOp     float64 `json:"allocs_per_op"`
	AllocBytesPerOp float64 `json:"alloc_bytes_per_op"`
	PeakRSSMB       float64 `json:"peak_rss_mb"`
	PeakHeapMB      float64 `json:"peak_heap_mb"`

	// Stages are the leader's per-proposal stage latencies (raft.apply.stage_* metrics).
	Stages map[string]stageLatency `json:"stages"`
	// Reads is what the nodes reported about reads (-read only), from the start of the
	// cluster: the election's few samples included.
	Reads *readStats `json:"reads,omitempty"`
}

func newReport(cfg config, res result, use usage, stages map[string]stageLatency) report {
	secs := res.elapsed.Seconds()
	ops := float64(max(res.ops, 1))
	return report{
		Nodes: cfg.nodes, Transport: cfg.transport, Store: cfg.store, Fsync: cfg.store == "wal" && cfg.fsync,
		Clients: cfg.clients, Size: cfg.size, Read: cfg.read,
		Ops: res.ops, Errors: res.errors, Seconds: secs,
		OpsPerSec: float64(res.ops) / secs, MBPerSec: float64(res.bytes) / secs / 1e6,
		P50us: micros(percentile(res.latency, 0.50)), P90us: micros(percentile(res.latency, 0.90)),
		P99us: micros(percentile(res.latency, 0.99)), MaxUs: micros(percentile(res.latency, 1)),
		CPUusPerOp: micros(use.cpu) / ops, CPUCores: use.cpu.Seconds() / secs,
		AllocsPerOp: float64(use.allocs) / ops, AllocBytesPerOp: float64(use.allocBytes) / ops,
		PeakRSSMB: float64(use.peakRSSByte) / (1 << 20), PeakHeapMB: float64(use.peakHeap) / (1 << 20),
		Stages: stages,
	}
}

// printReport writes a run's parameters and results as text.
func printReport(w io.Writer, r report) {
	store := r.Store
	if r.Store == "wal" {
		store += map[bool]string{true: " (fsync)", false: " (no fsync)"}[r.Fsync]
	}
	us := func(v float64) time.Duration { return round(time.Duration(v * float64(time.Microsecond))) }
	what := fmt.Sprintf("%d B commands", r.Size)
	if r.Read != "" {
		what = r.Read + " reads"
	}
	fmt.Fprintf(w, "raftbench: %d nodes, transport %s, store %s, %d clients, %s\n",
		r.Nodes, r.Transport, store, r.Clients, what)
	fmt.Fprintf(w, "ops:        %d in %.2fs (%d errors)\n", r.Ops, r.Seconds, r.Errors)
	fmt.Fprintf(w, "throughput: %.0f ops/s, %.2f MB/s\n", r.OpsPerSec, r.MBPerSec)
	fmt.Fprintf(w, "latency:    p50 %v  p90 %v  p99 %v  max %v\n", us(r.P50us), us(r.P90us), us(r.P99us), us(r.MaxUs))
	fmt.Fprintf(w, "stages:    ")
	for _, name := range stageNames {
		st := r.Stages[name]
		fmt.Fprintf(w, " %s p50 %v p99 %v;", name, us(st.P50), us(st.P99))
	}
	fmt.Fprintln(w)
	if rs := r.Reads; rs != nil {
		fmt.Fprintf(w, "reads:      %d rounds (%.1f reads each), %d ReadIndex RPCs (%.1f reads each), %d waits for the FSM (avg %v)\n",
			rs.Rounds, rs.ReadsPerRound, rs.RPCs, rs.ReadsPerRPC, rs.ApplyWaits, us(rs.ApplyWaitAvgUs))
	}
	fmt.Fprintf(w, "resources:  %.1f us CPU/op (%.2f cores), %.1f allocs/op, %.0f B/op, peak RSS %.1f MB, peak heap %.1f MB\n",
		r.CPUusPerOp, r.CPUCores, r.AllocsPerOp, r.AllocBytesPerOp, r.PeakRSSMB, r.PeakHeapMB)
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
