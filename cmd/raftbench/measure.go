package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
)

// usage is what the process consumed during a run.
type usage struct {
	cpu         time.Duration // user + system CPU time of the whole process
	allocs      uint64        // heap objects allocated
	allocBytes  uint64        // heap bytes allocated
	peakHeap    uint64        // the most live heap bytes seen while sampling
	peakRSSByte uint64        // the process's peak resident set size so far
}

// Runtime metrics read by the sampler: cheap to read, no stop-the-world.
const (
	metricAllocObjects = "/gc/heap/allocs:objects"
	metricAllocBytes   = "/gc/heap/allocs:bytes"
	metricHeapObjects  = "/memory/classes/heap/objects:bytes"
)

// heapSampleInterval is how often the sampler reads the live heap for its peak.
const heapSampleInterval = 20 * time.Millisecond

// meter measures a run's CPU, allocations and peak heap. Start it before the load and call
// stop after.
type meter struct {
	startCPU    time.Duration
	startAllocs uint64
	startBytes  uint64
	stopCh      chan struct{}
	done        chan struct{}
	peakHeap    uint64 // written by the sampler goroutine, read after done is closed
}

func readRuntime() (allocs, allocBytes, heap uint64) {
	s := []metrics.Sample{{Name: metricAllocObjects}, {Name: metricAllocBytes}, {Name: metricHeapObjects}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
}

func startMeter() *meter {
	m := &meter{stopCh: make(chan struct{}), done: make(chan struct{})}
	m.startCPU, _ = processUsage()
	m.startAllocs, m.startBytes, m.peakHeap = readRuntime()
	go m.sample() // exits on stop
	return m
}

// sample tracks the peak live heap until stop.
func (m *meter) sample() {
	defer close(m.done)
	tick := time.NewTicker(heapSampleInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			_, _, heap := readRuntime()
			m.peakHeap = max(m.peakHeap, heap)
		case <-m.stopCh:
			return
		}
	}
}

func (m *meter) stop() usage {
	close(m.stopCh)
	<-m.done
	cpu, rss := processUsage()
	allocs, bytes, heap := readRuntime()
	return usage{
		cpu:         cpu - m.startCPU,
		allocs:      allocs - m.startAllocs,
		allocBytes:  bytes - m.startBytes,
		peakHeap:    max(m.peakHeap, heap),
		peakRSSByte: rss,
	}
}

// histogram is a log-scaled latency histogram: fixed memory whatever the number of samples,
// with buckets 2% apart from 1 µs to about 10 minutes.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histBuckets = 1400
	histGrowth  = 1.02
)

func (h *histogram) add(d time.Duration) {
	us := max(float64(d)/float64(time.Microsecond), 1)
	b := min(int(math.Log(us)/math.Log(histGrowth)), histBuckets-1)
	h.counts[b]++
	h.n++
}

// quantile returns the upper bound of the bucket holding the q-quantile, or 0 without
// samples.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(math.Pow(histGrowth, float64(b+1)) * float64(time.Microsecond))
		}
	}
	return 0
}

// stages lists the raft.apply.stage_* metrics raftbench reports, by their short name.
var stageNames = [...]string{"queued", "written", "committed", "applied"}

// stageSink is a go-metrics sink that keeps a histogram of each proposal stage the leader
// reports (raft.apply.stage_*), the count and sum of the read samples (readSamples), and
// drops every other metric.
type stageSink struct {
	gometrics.BlackholeSink
	mu    sync.Mutex
	hists map[string]*histogram   // guarded by mu; by short stage name
	reads map[string]*sampleTotal // guarded by mu; by full name
}

// The read samples raftbench totals: reads per confirmation round (a follower's batch
// counts as one), reads per follower ReadIndex RPC, and reads that waited for their FSM.
const (
	sampleRoundSize   = "raft.read.round_size"
	sampleForwardSize = "raft.read.forward_batch_size"
	sampleApplyWait   = "raft.read.apply_wait"
)

// sampleTotal is how many samples of a metric arrived and their sum.
type sampleTotal struct {
	n   uint64
	sum float64
}

func newStageSink() *stageSink {
	s := &stageSink{hists: make(map[string]*histogram), reads: make(map[string]*sampleTotal)}
	for _, name := range stageNames {
		s.hists[name] = &histogram{}
	}
	for _, name := range []string{sampleRoundSize, sampleForwardSize, sampleApplyWait} {
		s.reads[name] = &sampleTotal{}
	}
	return s
}

// AddSample implements gometrics.MetricSink. Stage samples are milliseconds.
func (s *stageSink) AddSample(key []string, val float32) {
	full := strings.Join(key, ".")
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.reads[full]; t != nil {
		t.n++
		t.sum += float64(val)
		return
	}
	name, ok := strings.CutPrefix(full, "raft.apply.stage_")
	if !ok {
		return
	}
	if h := s.hists[name]; h != nil {
		h.add(time.Duration(float64(val) * float64(time.Millisecond)))
	}
}

// readStats is what the nodes reported about reads during a run.
type readStats struct {
	Rounds         uint64  `json:"rounds"`          // leader confirmation rounds
	ReadsPerRound  float64 `json:"reads_per_round"` // a follower's batch counts as one
	RPCs           uint64  `json:"rpcs"`            // follower ReadIndex RPCs
	ReadsPerRPC    float64 `json:"reads_per_rpc"`
	ApplyWaits     uint64  `json:"apply_waits"` // reads that waited for their FSM
	ApplyWaitAvgUs float64 `json:"apply_wait_avg_us"`
}

// readSummary totals the read samples.
func (s *stageSink) readSummary() readStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	avg := func(t *sampleTotal) float64 {
		if t.n == 0 {
			return 0
		}
		return t.sum / float64(t.n)
	}
	round, fwd, wait := s.reads[sampleRoundSize], s.reads[sampleForwardSize], s.reads[sampleApplyWait]
	return readStats{
		Rounds: round.n, ReadsPerRound: avg(round),
		RPCs: fwd.n, ReadsPerRPC: avg(fwd),
		ApplyWaits: wait.n, ApplyWaitAvgUs: avg(wait) * 1e3, // go-metrics timers are in ms
	}
}

// AddSampleWithLabels implements gometrics.MetricSink.
func (s *stageSink) AddSampleWithLabels(key []string, val float32, _ []gometrics.Label) {
	s.AddSample(key, val)
}

// stageLatency is one stage's percentiles, in microseconds.
type stageLatency struct {
	P50 float64 `json:"p50_us"`
	P99 float64 `json:"p99_us"`
	N   uint64  `json:"n"`
}

// summary returns each stage's percentiles.
func (s *stageSink) summary() map[string]stageLatency {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]stageLatency, len(s.hists))
	for name, h := range s.hists {
		out[name] = stageLatency{P50: micros(h.quantile(0.5)), P99: micros(h.quantile(0.99)), N: h.n}
	}
	return out
}

// installStageSink makes a fresh stageSink the process's global go-metrics sink.
func installStageSink() (*stageSink, error) {
	sink := newStageSink()
	conf := gometrics.DefaultConfig("")
	conf.EnableHostname = false
	conf.EnableRuntimeMetrics = false
	if _, err := gometrics.NewGlobal(conf, sink); err != nil {
		return nil, err
	}
	return sink, nil
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// startProfile starts the CPU profile of -cpuprofile and the block and mutex profiling of
// -blockprofile and -mutexprofile, if asked; the returned function stops them and writes
// those profiles and the heap profile of -memprofile.
func startProfile(cfg config) (func() error, error) {
	if cfg.blockProf != "" {
		runtime.SetBlockProfileRate(1) // every blocking event: exact counts, slower run
	}
	if cfg.mutexProf != "" {
		runtime.SetMutexProfileFraction(1)
	}
	var cpu *os.File
	if cfg.cpuProf != "" {
		f, err := os.Create(cfg.cpuProf)
		if err != nil {
			return nil, fmt.Errorf("raftbench: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("raftbench: %w", err)
		}
		cpu = f
	}
	return func() error {
		var errs []error
		if cpu != nil {
			pprof.StopCPUProfile()
			errs = append(errs, cpu.Close())
		}
		runtime.SetBlockProfileRate(0)
		runtime.SetMutexProfileFraction(0)
		for _, p := range []struct{ file, name string }{
			{cfg.memProf, "allocs"}, {cfg.blockProf, "block"}, {cfg.mutexProf, "mutex"},
		} {
			if p.file == "" {
				continue
			}
			f, err := os.Create(p.file)
			if err != nil {
				errs = append(errs, fmt.Errorf("raftbench: %w", err))
				continue
			}
			errs = append(errs, pprof.Lookup(p.name).WriteTo(f, 0), f.Close())
		}
		return errors.Join(errs...)
	}, nil
}
