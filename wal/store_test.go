package wal

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

func TestStore_SecondOpenOfSameDirIsLocked(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	if s2, err := Open(dir); !errors.Is(err, ErrLocked) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	mustClose(t, s)
	s = testOpen(t, dir) // Close released the lock
	mustClose(t, s)
}

func TestStore_CallsAfterCloseReturnErrClosed(t *testing.T) {
	s := testOpen(t, t.TempDir())
	fillStore(t, s, 10)
	mustClose(t, s)
	var l raft.Log
	_, errFirst := s.FirstIndex()
	_, errLast := s.LastIndex()
	_, errGet := s.Get([]byte("k"))
	_, errGetU := s.GetUint64([]byte("k"))
	for name, err := range map[string]error{
		"FirstIndex": errFirst, "LastIndex": errLast, "Get": errGet, "GetUint64": errGetU,
		"GetLog":      s.GetLog(1, &l),
		"StoreLogs":   s.StoreLogs(storetest.MakeLogs(11, 1, 1, 1)),
		"DeleteRange": s.DeleteRange(1, 2),
		"Set":         s.Set([]byte("k"), []byte("v")),
		"SetUint64":   s.SetUint64([]byte("k"), 1),
		"Close":       s.Close(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestStore_RejectsBadBatchesWithSentinels(t *testing.T) {
	s := testOpen(t, t.TempDir())
	defer mustClose(t, s)
	model := fillStore(t, s, 5)
	for name, batch := range map[string][]*raft.Log{
		"gap":     storetest.MakeLogs(7, 1, 1, 1),
		"index 0": {{Index: 0, Term: 1, Type: raft.LogCommand}},
		"nil":     {nil},
	} {
		if err := s.StoreLogs(batch); !errors.Is(err, ErrOutOfOrder) {
			t.Errorf("StoreLogs(%s) = %v, want ErrOutOfOrder", name, err)
		}
	}
	if err := s.DeleteRange(2, 3); !errors.Is(err, ErrUnsupportedRange) {
		t.Errorf("DeleteRange of the middle = %v, want ErrUnsupportedRange", err)
	}
	storetest.CheckLogs(t, s, model)
}

func TestStore_InvalidOptionsAreRefused(t *testing.T) {
	for name, opt := range map[string]Option{
		"tiny segments":  WithSegmentSize(10),
		"negative cache": WithCacheEntries(-1),
		"nil logger":     WithLogger(nil),
	} {
		if s, err := Open(t.TempDir(), opt); !errors.Is(err, ErrInvalidOption) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Open with %s = %v, want ErrInvalidOption", name, err)
		}
	}
}

func TestStore_CompactionRemovesWholeSegments(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	model := fillStore(t, s, 200)
	before := segmentFiles(t, dir)
	first := lastSegmentLayout(s).firstIndex // compact up to just before the active segment
	mustDelete(t, s, 1, first-1)
	after := segmentFiles(t, dir)
	if len(after) != 1 || after[0] != before[len(before)-1] {
		t.Fatalf("after compacting to %d the segments are %v, want only %s", first, after, before[len(before)-1])
	}
	storetest.CheckLogs(t, s, model[first-1:])
	mustDelete(t, s, first, first+1) // inside the segment: the file stays, the marker moves
	mustClose(t, s)
	s = testOpen(t, dir)
	defer mustClose(t, s)
	storetest.CheckLogs(t, s, model[first+1:])
}

func TestStore_TailTruncationAcrossSegmentsIsDurable(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	model := fillStore(t, s, 200)
	nBefore := len(segmentFiles(t, dir))
	mustDelete(t, s, 40, 200)
	if n := len(segmentFiles(t, dir)); n >= nBefore {
		t.Fatalf("tail truncation kept %d of %d segments", n, nBefore)
	}
	repl := storetest.MakeLogs(40, 30, 2, 100)
	if err := s.StoreLogs(repl); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s = testOpen(t, dir)
	defer mustClose(t, s)
	if rep := s.OpenReport(); rep.TailCut || len(rep.RemovedFiles) > 0 {
		t.Fatalf("clean reopen repaired something: %+v", rep)
	}
	storetest.CheckLogs(t, s, append(model[:39:39], repl...))
}

func TestStore_InterruptedCompactionIsFinishedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	model := fillStore(t, s, 200)
	segs := segmentFiles(t, dir)
	lay := lastSegmentLayout(s)
	// A crash right after the marker became durable, before any segment was removed.
	s.writeMu.Lock()
	if err := s.writeMarker(lay.firstIndex + 1); err != nil {
		t.Fatal(err)
	}
	s.writeMu.Unlock()
	mustClose(t, s)
	s = testOpen(t, dir)
	defer mustClose(t, s)
	storetest.CheckLogs(t, s, model[lay.firstIndex:])
	rep := s.OpenReport()
	if len(rep.RemovedFiles) != len(segs)-1 {
		t.Fatalf("Open removed %v, want the %d segments below the marker", rep.RemovedFiles, len(segs)-1)
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, segs[len(segs)-1:]) {
		t.Fatalf("segments after Open: %v", got)
	}
}

func TestStore_GetLogDetectsCorruptionOnRead(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir, WithCacheEntries(0))
	defer mustClose(t, s)
	fillStore(t, s, 20)
	start, _ := s.segs[0].recordSpan(5)
	flipByte(t, s.segs[0].path, start+recordHeaderBytes-1, 0x10) // a byte of the term
	var l raft.Log
	err := s.GetLog(5, &l)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), s.segs[0].path) {
		t.Fatalf("GetLog of a damaged record = %v, want ErrCorrupt naming the file", err)
	}
	if err := s.GetLog(6, &l); err != nil {
		t.Fatalf("GetLog of an intact record: %v", err)
	}
}

func TestStore_CorruptStableFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	if err := s.SetUint64([]byte("CurrentTerm"), 4); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	flipByte(t, filepath.Join(dir, stableFileName), 10, 0x01)
	if s, err := Open(dir, WithNoSync()); !errors.Is(err, ErrCorrupt) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open with a damaged stable file = %v, want ErrCorrupt", err)
	}
}

func TestStore_LeftoverTempFilesAreRemovedAndReported(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, stableFileName+tempSuffix)
	if err := os.WriteFile(tmp, []byte("half written"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := testOpen(t, dir)
	defer mustClose(t, s)
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp file still there: %v", err)
	}
	if rep := s.OpenReport(); !slices.Contains(rep.RemovedFiles, tmp) {
		t.Fatalf("report %+v does not list %s", rep, tmp)
	}
}

func TestStore_StableValuesSurviveReopenWithSync(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVote"), []byte("term 5, node-b")); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, s)
	if v, err := s.Get([]byte("LastVote")); err != nil || string(v) != "term 5, node-b" {
		t.Fatalf("Get after reopen = %q, %v", v, err)
	}
	if _, err := s.GetUint64([]byte("LastVote")); err == nil {
		t.Fatal("GetUint64 of a value that is not 8 bytes succeeded")
	}
}

// mustDelete deletes [min, max] or fails the test.
func mustDelete(t testing.TB, s *Store, min, max uint64) {
	t.Helper()
	if err := s.DeleteRange(min, max); err != nil {
		t.Fatalf("DeleteRange(%d, %d): %v", min, max, err)
	}
}
