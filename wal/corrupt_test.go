package wal

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

// dirDigest returns a digest of every file name, size and content in dir except LOCK, so a
// test can check that a failed Open left the directory as it was.
func dirDigest(t testing.TB, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != lockFileName {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(n))
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(b))))
		h.Write(b)
	}
	return strings.Join(names, ",") + " " + hex.EncodeToString(h.Sum(nil))[:16]
}

// oneByOne stores n entries with one StoreLogs each in a single large segment, the way a
// follower under light load writes, and returns the directory, the entries and the layout.
func oneByOne(t *testing.T, n int) (string, []*raft.Log, layout) {
	t.Helper()
	dir := t.TempDir()
	s := testOpen(t, dir, WithSegmentSize(64<<20))
	var model []*raft.Log
	for i := 1; i <= n; i++ {
		l := storetest.MakeLog(uint64(i), 1, 40)
		if err := s.StoreLog(l); err != nil {
			t.Fatal(err)
		}
		model = append(model, l)
	}
	lay := lastSegmentLayout(s)
	mustClose(t, s)
	return dir, model, lay
}

// The issue-16 reproduction: one bit flipped inside entry 10 of 1,000 acknowledged entries used
// to make Open cut the segment there and return nil with LastIndex 9.
func TestOpen_BitFlipWithIntactRecordsAfterItIsErrCorrupt(t *testing.T) {
	dir, _, lay := oneByOne(t, 1000)
	off := lay.starts[9] + recordHeaderBytes + 5 // inside entry 10's data
	flipByte(t, filepath.Join(dir, lay.name), off, 0x10)
	checkCorruptKept(t, dir, lay.name, off)
}

func TestOpen_BadSegmentHeaderWithRecordsAfterItIsErrCorrupt(t *testing.T) {
	dir, _, lay := oneByOne(t, 50)
	flipByte(t, filepath.Join(dir, lay.name), 3, 0x01) // the magic
	checkCorruptKept(t, dir, lay.name, 0)
}

func TestOpen_BitFlipInLastCompleteRecordIsErrCorrupt(t *testing.T) {
	dir, _, lay := oneByOne(t, 50)
	last := lay.starts[len(lay.starts)-1]
	for _, off := range []int64{last + 2, last + 20, last + recordHeaderBytes + 3, lay.size - 1} {
		d := copyDir(t, dir)
		flipByte(t, filepath.Join(d, lay.name), off, 0x04)
		checkCorruptKept(t, d, lay.name, off)
	}
}

// A flipped length bit can make the last record claim more bytes than the file holds, which
// looks like a torn write; the record is complete, so it is corruption.
func TestOpen_FlippedLengthOfLastRecordIsErrCorrupt(t *testing.T) {
	dir, _, lay := oneByOne(t, 50)
	last := lay.starts[len(lay.starts)-1]
	flipByte(t, filepath.Join(dir, lay.name), last+5, 0x01) // data length += 256
	checkCorruptKept(t, dir, lay.name, last)
}

// A power loss during the last write can leave the file longer than what reached the disk,
// with zeroed sectors: that is a torn tail and is cut.
func TestOpen_ZeroedSectorsInLastBatchAreCutAsTorn(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir, WithSegmentSize(64<<20))
	acked := storetest.MakeLogs(1, 20, 1, 100)
	if err := s.StoreLogs(acked); err != nil {
		t.Fatal(err)
	}
	lastBatch := storetest.MakeLogs(21, 30, 1, 100) // about 4 KiB: several sectors
	if err := s.StoreLogs(lastBatch); err != nil {
		t.Fatal(err)
	}
	lay := lastSegmentLayout(s)
	mustClose(t, s)
	batchStart := lay.starts[20]
	for _, zeroFrom := range []int64{batchStart, (batchStart/512 + 1) * 512, (batchStart/512 + 3) * 512} {
		d := copyDir(t, dir)
		path := filepath.Join(d, lay.name)
		zeroRange(t, path, zeroFrom, lay.size)
		s := testOpen(t, d)
		rep := s.OpenReport()
		survivors := lay.survivors(zeroFrom)
		if !rep.TailCut || rep.CutFile != path || rep.LastIndex != survivors {
			t.Fatalf("zeros from %d: report %+v, want a cut leaving %d entries", zeroFrom, rep, survivors)
		}
		storetest.CheckLogs(t, s, append(append([]*raft.Log(nil), acked...), lastBatch...)[:survivors])
		mustClose(t, s)
	}
	// A zeroed sector with intact records after it is corruption, even inside the last batch:
	// without batch boundaries on disk the store cannot prove those records were never
	// acknowledged, so it refuses rather than guess (a documented, conservative limit).
	d := copyDir(t, dir)
	hole := (batchStart/512 + 2) * 512
	zeroRange(t, filepath.Join(d, lay.name), hole, hole+512)
	checkCorruptKept(t, d, lay.name, hole)
	// Without fsync nothing was ever synced, so the same hole is a torn tail and is cut.
	s = testOpen(t, d) // WithNoSync
	if rep := s.OpenReport(); !rep.TailCut || rep.LastIndex != lay.survivors(hole) {
		t.Fatalf("WithNoSync, zeroed sector at %d: report %+v, want a cut leaving %d entries", hole, rep, lay.survivors(hole))
	}
	mustClose(t, s)
}

// zeroRange overwrites [from, to) of path with zeros.
func zeroRange(t *testing.T, path string, from, to int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, to-from), from); err != nil {
		t.Fatal(err)
	}
}

// A segment written by a newer release is refused with ErrUnsupportedVersion and left alone,
// whether it is sealed or the active one.
func TestOpen_NewerSegmentVersionIsRefusedAndKept(t *testing.T) {
	template, _, _ := damagedTemplate(t)
	names := segmentFiles(t, template)
	for _, name := range []string{names[0], names[len(names)-1]} {
		dir := copyDir(t, template)
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint32(b[16:20], segmentVersion+1)
		binary.LittleEndian.PutUint32(b[20:24], crc32.Checksum(b[:20], castagnoli))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		before := dirDigest(t, dir)
		s, err := Open(dir, WithNoSync(), WithSegmentSize(4<<10))
		if err == nil {
			s.Close()
			t.Fatalf("%s: Open of a newer segment version succeeded", name)
		}
		if !errors.Is(err, ErrUnsupportedVersion) || !strings.Contains(err.Error(), path) {
			t.Fatalf("%s: Open error %q, want ErrUnsupportedVersion naming the file", name, err)
		}
		if dirDigest(t, dir) != before {
			t.Fatalf("%s: refused Open changed the directory", name)
		}
	}
}

// A record that fails verification when read at run time stops the store: later writes to
// the log and to the stable values fail with ErrFailed wrapping the corruption.
func TestGetLog_CorruptRecordStopsTheStore(t *testing.T) {
	dir, _, lay := oneByOne(t, 20)
	s := testOpen(t, dir, WithSegmentSize(64<<20), WithCacheEntries(0))
	defer s.Close()
	flipByte(t, filepath.Join(dir, lay.name), lay.starts[4]+recordHeaderBytes+1, 0x20)
	var l raft.Log
	if err := s.GetLog(5, &l); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetLog(5) on a flipped record: %v, want ErrCorrupt", err)
	}
	if err := s.StoreLog(storetest.MakeLog(21, 1, 10)); !errors.Is(err, ErrFailed) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("StoreLog after corruption: %v, want ErrFailed wrapping ErrCorrupt", err)
	}
	if err := s.SetUint64([]byte("term"), 9); !errors.Is(err, ErrFailed) {
		t.Fatalf("SetUint64 after corruption: %v, want ErrFailed", err)
	}
	if err := s.DeleteRange(15, 20); !errors.Is(err, ErrFailed) {
		t.Fatalf("DeleteRange after corruption: %v, want ErrFailed", err)
	}
}

// FuzzRecoverScan feeds Open a last segment with arbitrary content (the seeds are real
// segments, whole, torn, zeroed and bit-flipped, so mutations stay close to real damage).
// Open must never panic; when it fails, the error is ErrCorrupt or ErrUnsupportedVersion and
// the file is untouched; when it succeeds, what it kept is a prefix of the file and every
// entry in it reads back.
func FuzzRecoverScan(f *testing.F) {
	seedDir := f.TempDir()
	s, err := Open(seedDir, WithNoSync(), WithSegmentSize(64<<20))
	if err != nil {
		f.Fatal(err)
	}
	for i := uint64(1); i <= 12; i += 3 {
		if err := s.StoreLogs(storetest.MakeLogs(i, 3, 2, int(i*29%200))); err != nil {
			f.Fatal(err)
		}
	}
	s.Close()
	valid, err := os.ReadFile(filepath.Join(seedDir, segmentName(1)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-7])
	f.Add(valid[:segmentHeaderBytes+10])
	flipped := append([]byte(nil), valid...)
	flipped[len(flipped)/2] ^= 0x40
	f.Add(flipped)
	zeroed := append([]byte(nil), valid...)
	clear(zeroed[len(zeroed)-100:])
	f.Add(zeroed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, segmentName(1))
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, WithNoSync())
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Open: %v, want ErrCorrupt or ErrUnsupportedVersion", err)
			}
			if got, _ := os.ReadFile(path); string(got) != string(content) {
				t.Fatalf("failed Open changed the segment")
			}
			return
		}
		defer s.Close()
		kept, _ := os.ReadFile(path) // absent when Open removed an empty segment
		if !strings.HasPrefix(string(content), string(kept)) {
			t.Fatalf("Open kept %d bytes that are not a prefix of the %d written", len(kept), len(content))
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		for i := first; i <= last && last != 0; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil || l.Index != i {
				t.Fatalf("GetLog(%d) after Open: %v (index %d)", i, err, l.Index)
			}
		}
	})
}
