package wal

import (
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

// walSeed replays one randomized run: go test ./wal -run Crash -wal.seed=N.
var walSeed = flag.Uint64("wal.seed", 0, "seed for the randomized wal tests (0 picks one from the test name)")

// seedFor returns the seed for a test and logs it if the test fails.
func seedFor(t *testing.T) uint64 {
	seed := *walSeed
	if seed == 0 {
		for _, c := range t.Name() {
			seed = seed*31 + uint64(c)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (replay with -wal.seed=%d)", seed, seed)
		}
	})
	return seed
}

// damagedTemplate builds a store of several segments, closes it and returns its directory,
// the acknowledged entries and the layout of the last segment.
func damagedTemplate(t *testing.T) (string, []*raft.Log, layout) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	model := fillStore(t, s, 120)
	lay := lastSegmentLayout(s)
	mustClose(t, s)
	if n := len(segmentFiles(t, dir)); n < 3 || len(lay.starts) < 3 {
		t.Fatalf("template has %d segments and %d records in the last one; want several", n, len(lay.starts))
	}
	return dir, model, lay
}

// checkRecovered reopens a copy damaged at off (truncated there, or a byte flipped) and checks that it holds exactly the first survivors
// entries of model, that the report describes the cut, and that the store accepts appends.
func checkRecovered(t *testing.T, dir string, model []*raft.Log, lay layout, off int64, flipped bool) {
	t.Helper()
	survivors := lay.survivors(off)
	path := filepath.Join(dir, lay.name)
	s := testOpen(t, dir)
	defer mustClose(t, s)
	storetest.CheckLogs(t, s, model[:survivors])
	rep := s.OpenReport()
	clean := lay.isBoundary(off) && !flipped
	switch {
	case clean && rep.TailCut:
		t.Fatalf("damage at record boundary %d: report %+v cut something", off, rep)
	case !clean && !rep.TailCut:
		t.Fatalf("damage at offset %d: report %+v says nothing was cut", off, rep)
	case rep.TailCut && (rep.CutFile != path || rep.CutBytes <= 0 || rep.CutOffset > off):
		t.Fatalf("damage at offset %d: report %+v does not match %s", off, rep, path)
	}
	if gone := survivors < lay.firstIndex; gone != slices.Contains(rep.RemovedFiles, path) {
		t.Fatalf("damage at offset %d: survivors %d, segment starts at %d, removed %v", off, survivors, lay.firstIndex, rep.RemovedFiles)
	}
	next := storetest.MakeLog(survivors+1, 2, 50)
	if err := s.StoreLog(next); err != nil {
		t.Fatalf("StoreLog after recovery: %v", err)
	}
	storetest.CheckLogs(t, s, append(slices.Clone(model[:survivors]), next))
}

// truncateCopy copies the template and truncates its last segment at off.
func truncateCopy(t *testing.T, template string, lay layout, off int64) string {
	dir := copyDir(t, template)
	if err := os.Truncate(filepath.Join(dir, lay.name), off); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCrash_TruncatedLastSegmentKeepsAcknowledgedPrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(seedFor(t), 1))
	template, model, lay := damagedTemplate(t)
	lastStart := lay.starts[len(lay.starts)-1]
	for off := lastStart; off <= lay.size; off++ { // every byte of the last record
		checkRecovered(t, truncateCopy(t, template, lay, off), model, lay, off, false)
	}
	offs := []int64{0, 1, segmentHeaderBytes - 1, segmentHeaderBytes, segmentHeaderBytes + 1}
	for i := 0; i < 60; i++ { // anywhere in the segment
		offs = append(offs, rng.Int64N(lay.size+1))
	}
	for _, off := range offs {
		checkRecovered(t, truncateCopy(t, template, lay, off), model, lay, off, false)
	}
}

func TestCrash_FlippedByteInLastSegmentIsErrCorruptAndKept(t *testing.T) {
	rng := rand.New(rand.NewPCG(seedFor(t), 2))
	template, _, lay := damagedTemplate(t)
	offs := []int64{0, segmentHeaderBytes - 1, segmentHeaderBytes, segmentHeaderBytes + 4, lay.size - 1}
	for i := 0; i < 150; i++ {
		offs = append(offs, rng.Int64N(lay.size))
	}
	for _, off := range offs {
		dir := copyDir(t, template)
		flipByte(t, filepath.Join(dir, lay.name), off, byte(1+rng.IntN(255)))
		checkCorruptKept(t, dir, lay.name, off)
	}
}

// checkCorruptKept opens dir (fsync on), whose file name was damaged at off, and checks that
// Open fails with ErrCorrupt naming the file and an offset at or before off, and changes no
// file.
func checkCorruptKept(t *testing.T, dir, name string, off int64) {
	t.Helper()
	before := dirDigest(t, dir)
	s, err := Open(dir, WithSegmentSize(4<<10)) // fsync on: see tailIsTorn for WithNoSync
	if err == nil {
		rep := s.OpenReport()
		s.Close()
		t.Fatalf("damage at offset %d of %s: Open succeeded, report %+v", off, name, rep)
	}
	path := filepath.Join(dir, name)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("damage at offset %d: Open error %q does not wrap ErrCorrupt or name %s and an offset", off, err, path)
	}
	if after := dirDigest(t, dir); after != before {
		t.Fatalf("damage at offset %d: failed Open changed the directory:\nbefore %s\nafter  %s", off, before, after)
	}
}

// flipByte XORs the byte at off of path with mask.
func flipByte(t testing.TB, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCrash_CorruptSealedSegmentIsAnErrorNamingFileAndOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(seedFor(t), 3))
	template, _, _ := damagedTemplate(t)
	sealed := segmentFiles(t, template)[0]
	for i := 0; i < 30; i++ {
		dir := copyDir(t, template)
		path := filepath.Join(dir, sealed)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		off := rng.Int64N(st.Size())
		flipByte(t, path, off, byte(1+rng.IntN(255)))
		s, err := Open(dir, WithNoSync(), WithSegmentSize(4<<10))
		if err == nil {
			s.Close()
			t.Fatalf("Open with byte %d of sealed %s flipped succeeded", off, sealed)
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset") {
			t.Fatalf("Open error %q does not wrap ErrCorrupt or name %s and an offset", err, path)
		}
	}
}
