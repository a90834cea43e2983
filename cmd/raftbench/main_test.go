package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

func TestPercentile_NearestRank(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	cases := []struct {
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.5, 7 * time.Millisecond},
		{ms(7), 0, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.51, 3 * time.Millisecond},
		{ms(1, 2, 3, 4), 1, 4 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.9, 9 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
	}
	for _, tc := range cases {
		if got := percentile(tc.sorted, tc.q); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.sorted, tc.q, got, tc.want)
		}
	}
}

func TestPayloads_DeterministicDistinctAndSized(t *testing.T) {
	a, b, other := newPayloads(newPayloadPool(7, 128), 3), newPayloads(newPayloadPool(7, 128), 3), newPayloads(newPayloadPool(7, 128), 4)
	seen := make(map[string]bool)
	for seq := uint64(0); seq < 2*payloadPool; seq++ {
		pa, pb := a.next(seq), b.next(seq)
		if !bytes.Equal(pa, pb) {
			t.Fatalf("seq %d: two generators with one seed and client differ", seq)
		}
		if len(pa) != 128 {
			t.Fatalf("seq %d: %d bytes, want 128", seq, len(pa))
		}
		if bytes.Equal(pa, other.next(seq)) {
			t.Fatalf("seq %d: clients 3 and 4 send the same command", seq)
		}
		if seen[string(pa)] {
			t.Fatalf("seq %d: command repeats", seq)
		}
		seen[string(pa)] = true
		pa[20] ^= 0xFF // the caller owns the slice: changing it must not change the next ones
	}
	if !bytes.Equal(a.next(5), b.next(5)) {
		t.Fatal("a caller's change to a command leaked into the pool")
	}
	if got := len(newPayloads(newPayloadPool(1, 4), 0).next(9)); got != 4 {
		t.Fatalf("a 4-byte command has %d bytes", got)
	}
}

func TestParseFlags_RejectsInvalidCombinations(t *testing.T) {
	for _, args := range [][]string{
		{"-nodes", "0"},
		{"-transport", "udp"},
		{"-store", "bolt"},
		{"-clients", "0"},
		{"-size", "0"},
		{"-duration", "0s"},
		{"-ops", "-1"},
		{"-heartbeat-timeout", "1ms"},
		{"-no-such-flag"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); !errors.Is(err, errUsage) {
			t.Errorf("%v: err %v, want errUsage", args, err)
		}
	}
	cfg, err := parseFlags([]string{"-ops", "10", "-duration", "0s"}, &bytes.Buffer{})
	if err != nil || cfg.ops != 10 || cfg.nodes != 3 || cfg.transport != "tcp" {
		t.Fatalf("valid flags: %+v, %v", cfg, err)
	}
}

// testConfig is a short run: few operations. The timeouts stay at a second so a loaded CI
// machine (race detector, packages tested in parallel) does not depose the leader mid-run.
func testConfig(t *testing.T, transport, store string) config {
	cfg, err := parseFlags([]string{
		"-transport", transport, "-store", store, "-fsync=false", "-dir", t.TempDir(),
		"-clients", "8", "-size", "64", "-ops", "400", "-heartbeat-timeout", "1s",
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRunLoad_EveryNodeAppliesEveryCommand(t *testing.T) {
	for _, combo := range [][2]string{{"inmem", "inmem"}, {"tcp", "inmem"}, {"tcp", "wal"}} {
		t.Run(combo[0]+"_"+combo[1], func(t *testing.T) {
			cfg := testConfig(t, combo[0], combo[1])
			c, err := newCluster(cfg, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			res, err := runLoad(cfg, func() (*raft.Raft, error) { return c.leader(10 * time.Second) }, applyOps(cfg))
			if err != nil {
				t.Fatal(err)
			}
			if res.ops+res.errors != cfg.ops || len(res.latency) != res.ops || res.bytes != int64(res.ops*cfg.size) {
				t.Fatalf("result %d ops, %d errors, %d latencies, %d bytes for %d commands", res.ops, res.errors, len(res.latency), res.bytes, cfg.ops)
			}
			if res.errors != 0 {
				t.Fatalf("%d applies failed in a healthy cluster", res.errors)
			}
			deadline := time.Now().Add(10 * time.Second)
			for _, n := range c.nodes {
				for n.fsm.applied.Load() < uint64(res.ops) {
					if time.Now().After(deadline) {
						t.Fatalf("%s applied %d of %d commands", n.id, n.fsm.applied.Load(), res.ops)
					}
					<-time.After(time.Millisecond)
				}
			}
		})
	}
}

func TestRun_PrintsThroughputAndLatency(t *testing.T) {
	cfg := testConfig(t, "inmem", "inmem")
	var out bytes.Buffer
	if err := run(cfg, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"3 nodes, transport inmem, store inmem, 8 clients, 64 B commands",
		fmt.Sprintf("ops:        %d in", cfg.ops), "(0 errors)", "ops/s", "MB/s", "p50", "p90", "p99", "max",
		"queued p50", "written p50", "committed p50", "applied p50", "CPU/op", "allocs/op", "peak RSS", "peak heap",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRun_JSONLineWithResourcesAndStages(t *testing.T) {
	cfg := testConfig(t, "inmem", "inmem")
	cfg.json = true
	var out bytes.Buffer
	if err := run(cfg, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out.String())
	}
	if rep.Ops != cfg.ops || rep.Errors != 0 || rep.Clients != 8 || rep.Size != 64 || rep.Transport != "inmem" {
		t.Fatalf("report %+v does not describe the run", rep)
	}
	if rep.CPUusPerOp <= 0 || rep.AllocsPerOp <= 0 || rep.PeakRSSMB <= 0 || rep.PeakHeapMB <= 0 || rep.P50us <= 0 {
		t.Fatalf("resources not measured: %+v", rep)
	}
	for _, name := range stageNames {
		// Every acknowledged command passed through every stage on the leader (plus the
		// term's no-op; the written stage may miss entries still being written at the end).
		if st := rep.Stages[name]; st.N < uint64(rep.Ops)/2 || st.P50 <= 0 || st.P99 < st.P50 {
			t.Fatalf("stage %s: %+v for %d ops", name, st, rep.Ops)
		}
	}
}

func TestHistogram_QuantilesWithinTwoPercent(t *testing.T) {
	var h histogram
	if h.quantile(0.5) != 0 {
		t.Fatal("empty histogram has a median")
	}
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}, {0, time.Millisecond}} {
		got := h.quantile(tc.q)
		if got < tc.want || float64(got) > float64(tc.want)*1.021 {
			t.Errorf("quantile %v = %v, want within 2%% above %v", tc.q, got, tc.want)
		}
	}
}

func TestMatrix_CellsAndChildFlagsRoundTrip(t *testing.T) {
	cfg, err := parseFlags([]string{"-matrix", "-matrix-transports", "tcp,inmem", "-matrix-stores", "wal",
		"-matrix-sizes", "128, 4096", "-matrix-clients", "1,16,256", "-duration", "3s", "-fsync=false", "-seed", "9"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cells, err := cfg.matrixCells()
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 2*1*2*3 {
		t.Fatalf("%d cells, want 12", len(cells))
	}
	if first, last := cells[0], cells[len(cells)-1]; first != (cell{"tcp", "wal", 128, 1}) || last != (cell{"inmem", "wal", 4096, 256}) {
		t.Fatalf("cells run from %+v to %+v", first, last)
	}
	child, err := parseFlags(cfg.childArgs(cells[4]), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !child.json || child.matrix || child.transport != "tcp" || child.size != 4096 || child.clients != 16 ||
		child.duration != 3*time.Second || child.fsync || child.seed != 9 {
		t.Fatalf("child flags parse to %+v", child)
	}
	for _, bad := range [][]string{
		{"-matrix", "-matrix-sizes", "12x"},
		{"-matrix", "-matrix-clients", "0"},
		{"-matrix", "-matrix-transports", "udp"},
		{"-matrix", "-matrix-stores", ""},
	} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want errUsage", bad, err)
		}
	}
}

// TestMain lets the test binary stand in for raftbench when -matrix runs it as a child.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const childEnv = "RAFTBENCH_TEST_CHILD"

func TestRunMatrix_OneJSONLinePerCell(t *testing.T) {
	t.Setenv(childEnv, "1")
	cfg, err := parseFlags([]string{"-matrix", "-matrix-transports", "inmem", "-matrix-stores", "inmem",
		"-matrix-sizes", "32,64", "-matrix-clients", "2", "-ops", "50", "-duration", "0s"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(cfg, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want one per cell:\n%s", len(lines), out.String())
	}
	for i, line := range lines {
		var rep report
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if rep.Size != 32*(i+1) || rep.Ops != 50 || rep.PeakRSSMB <= 0 {
			t.Fatalf("line %d: %+v", i, rep)
		}
	}
}

// Every read kind runs against a healthy cluster without errors, and the follower kind
// reads on followers only.
func TestRunLoad_ReadKinds(t *testing.T) {
	for _, kind := range readKinds {
		t.Run(kind, func(t *testing.T) {
			cfg := testConfig(t, "inmem", "inmem")
			cfg.read = kind
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			c, err := newCluster(cfg, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			leader, err := c.leader(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.waitLeaderKnown(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			res, err := runLoad(cfg, func() (*raft.Raft, error) { return c.leader(10 * time.Second) }, c.readOps(cfg))
			if err != nil {
				t.Fatal(err)
			}
			if res.errors != 0 || res.ops != cfg.ops {
				t.Fatalf("%d reads, %d errors, want %d reads", res.ops, res.errors, cfg.ops)
			}
			for i := 0; i < cfg.clients; i++ {
				if n := c.follower(leader, i); n == nil || n.raft == leader {
					t.Fatalf("client %d reads on the leader in follower mode", i)
				}
			}
		})
	}
	if _, err := parseFlags([]string{"-read", "dirty"}, &bytes.Buffer{}); !errors.Is(err, errUsage) {
		t.Fatalf("-read dirty: %v, want errUsage", err)
	}
}
