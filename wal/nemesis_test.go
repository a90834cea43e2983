package wal_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
	"github.com/raftkit/raft/wal"
)

// The corruption nemesis (issue 16): a randomized run on a wal + FileSnapshotStore cluster in
// which, between crash and restart, a minority node's files get bytes flipped at seeded
// random places (segments, the stable file, the first-index marker, snapshot data and
// metadata). A damaged node must refuse to start with an error that says so, or start only
// if nothing it held was lost; a refused node is rebuilt by the documented path. The safety
// checker runs throughout, and the run ends with a healed phase in which every acknowledged
// write must be applied, in the same order, on every node.

var (
	nemesisSeed  = flag.Uint64("wal.nemesis.seed", 0, "replay one corruption-nemesis run (0: seeds 1..runs)")
	nemesisRuns  = flag.Int("wal.nemesis.runs", 2, "corruption-nemesis runs")
	nemesisSteps = flag.Int("wal.nemesis.steps", 5, "crash/damage/restart steps per corruption-nemesis run")
)

func TestWALChaos_CorruptionNemesis(t *testing.T) {
	seeds := []uint64{*nemesisSeed}
	if *nemesisSeed == 0 {
		seeds = seeds[:0]
		for i := 1; i <= *nemesisRuns; i++ {
			seeds = append(seeds, uint64(i))
		}
	}
	for _, seed := range seeds {
		t.Run("", func(t *testing.T) {
			t.Logf("seed %d, %d steps (replay with -wal.nemesis.seed=%d)", seed, *nemesisSteps, seed)
			runNemesis(t, seed, *nemesisSteps)
		})
	}
}

func runNemesis(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 1616))
	root := t.TempDir()
	walOpts := []wal.Option{wal.WithSegmentSize(1 << 10), wal.WithNoSync()}
	open := walStores(root, walOpts...)
	opts := withSnapshots(raftest.Options{Nodes: 3, OpenStores: open}, 48, 16)
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		c.WaitLeader(clusterWait)
		acked := 0
		for step := 0; step < steps; step++ {
			n := 20 + rng.IntN(60)
			applyN(t, c, "s", n)
			acked += n
			victim := rng.IntN(3)
			id := c.Node(victim).ID
			c.Crash(victim)
			walDir := filepath.Join(root, string(id), "wal")
			held := readLogTerms(t, walDir, walOpts...)
			damaged := damageNode(t, rng, filepath.Join(root, string(id)))
			err := tryStart(t, open, id)
			t.Logf("step %d: %s damaged %v; start-up: %v", step, id, damaged, err)
			switch {
			case err == nil:
				// Starting is allowed only when nothing the node held was lost: a log
				// that silently lost acknowledged entries lets the node vote and
				// acknowledge as if it never had them (seen as a safety violation much
				// later; say it here, where it happens).
				if now := readLogTerms(t, walDir, walOpts...); !now.holds(held) {
					t.Fatalf("step %d: %s started after damage to %v with a log that lost entries it held: before %s, after %s",
						step, id, damaged, held, now)
				}
				c.Start(victim)
			case errors.Is(err, wal.ErrCorrupt) || errors.Is(err, raft.ErrStorageDamaged) || errors.Is(err, raft.ErrSnapshotCorrupt):
				if len(damaged) == 0 {
					t.Fatalf("step %d: undamaged %s refused to start: %v", step, id, err)
				}
				rebuild(t, c, root, victim)
			default:
				t.Fatalf("step %d: start-up of %s failed with %v, which does not say the storage is damaged", step, id, err)
			}
			c.CheckSafety()
		}
		// Healed phase: every node up, every acknowledged write applied everywhere.
		last := applyN(t, c, "healed", 20)
		requireSameFSMs(t, c, last, acked+20)
	})
}

// damageNode flips bytes in up to three of the node's files, or none (a plain crash), and
// returns the files it damaged.
func damageNode(t *testing.T, rng *rand.Rand, nodeDir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(nodeDir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && filepath.Base(path) != "LOCK" {
			files = append(files, path)
		}
		return nil
	})
	var damaged []string
	for i := rng.IntN(4); i > 0 && len(files) > 0; i-- {
		path := files[rng.IntN(len(files))]
		if st, err := os.Stat(path); err != nil || st.Size() == 0 {
			continue
		}
		flipRandomByte(t, rng, path)
		damaged = append(damaged, path)
	}
	return damaged
}

// logTerms is what a node's log holds: its bounds and the term of every entry.
type logTerms struct {
	first, last uint64
	terms       []uint64 // terms[i] is the term of entry first+i
}

func (l logTerms) String() string {
	return fmt.Sprintf("entries %d..%d", l.first, l.last)
}

// holds says whether l still holds every entry of before, with the same terms.
func (l logTerms) holds(before logTerms) bool {
	if before.last == 0 {
		return true
	}
	if l.first > before.first || l.last < before.last {
		return false
	}
	for i, term := range before.terms {
		if l.terms[before.first-l.first+uint64(i)] != term {
			return false
		}
	}
	return true
}

// readLogTerms opens the wal in dir (the node is down), reads its bounds and terms, and closes it.
func readLogTerms(t *testing.T, dir string, opts ...wal.Option) logTerms {
	t.Helper()
	s, err := wal.Open(dir, opts...)
	if err != nil {
		t.Fatalf("reading the log in %s: %v", dir, err)
	}
	defer s.Close()
	var l logTerms
	if l.first, err = s.FirstIndex(); err != nil {
		t.Fatal(err)
	}
	if l.last, err = s.LastIndex(); err != nil {
		t.Fatal(err)
	}
	for i := l.first; i <= l.last && l.last != 0; i++ {
		var e raft.Log
		if err := s.GetLog(i, &e); err != nil {
			t.Fatalf("reading entry %d in %s: %v", i, dir, err)
		}
		l.terms = append(l.terms, e.Term)
	}
	return l
}
