package wal

import (
	"path/filepath"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

// emptyWithLeftover fills a store, deletes the whole log, and puts back a copy of one old
// segment file: the state a failed (logged, non-fatal) removal leaves. It returns the base of
// the segment put back.
func emptyWithLeftover(t *testing.T, dir string, s *Store, n int) uint64 {
	t.Helper()
	fillStore(t, s, n)
	names := segmentFiles(t, dir)
	if len(names) < 3 {
		t.Fatalf("want at least 3 segments, got %d", len(names))
	}
	keep := names[len(names)-2]
	saved := filepath.Join(t.TempDir(), keep)
	copyFile(t, filepath.Join(dir, keep), saved)
	if err := s.DeleteRange(1, uint64(n)); err != nil {
		t.Fatal(err)
	}
	copyFile(t, saved, filepath.Join(dir, keep))
	base, _ := parseSegmentName(keep)
	return base
}

func storeRange(t *testing.T, s *Store, from, to, term uint64) {
	t.Helper()
	var batch []*raft.Log
	for i := from; i <= to; i++ {
		batch = append(batch, storetest.MakeLog(i, term, 10))
	}
	if err := s.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
}

func reopenBounds(t *testing.T, dir string) (uint64, uint64) {
	t.Helper()
	s, err := Open(dir, WithNoSync(), WithSegmentSize(4<<10))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer mustClose(t, s)
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	return first, last
}

// A segment file that survived the deletion of the whole log must not break the next Open
// when the log restarts past the old end.
func TestStore_LeftoverSegmentAfterEmptyingDoesNotFailOpen(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	emptyWithLeftover(t, dir, s, 300)
	storeRange(t, s, 400, 410, 2)
	mustClose(t, s)
	if first, last := reopenBounds(t, dir); first != 400 || last != 410 {
		t.Fatalf("bounds after reopen [%d, %d], want [400, 410]", first, last)
	}
}

// Nor may it come back when the log restarts below the old end, which lowers the marker:
// the deleted entries after the new ones would be resurrected.
func TestStore_LeftoverSegmentAfterEmptyingIsNotResurrected(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	base := emptyWithLeftover(t, dir, s, 300)
	storeRange(t, s, 1, base-1, 2)
	mustClose(t, s)
	if first, last := reopenBounds(t, dir); first != 1 || last != base-1 {
		t.Fatalf("bounds after reopen [%d, %d], want [1, %d]: deleted entries came back", first, last, base-1)
	}
}
