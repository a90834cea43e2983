package wal

import (
	"bytes"
	"testing"

	"github.com/raftkit/raft"
)

// A batch too large to cache, written over indexes a tail truncation freed, must not leave the
// truncated entries' cache slots visible: GetLog must return the new entries.
func TestStore_UncachedBatchAfterTailTruncationHidesStaleCache(t *testing.T) {
	s := testOpen(t, t.TempDir(), WithSegmentSize(64<<20))
	defer mustClose(t, s)
	old := make([]*raft.Log, 4)
	for i := range old {
		old[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: []byte("old")}
	}
	if err := s.StoreLogs(old); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(3, 4); err != nil {
		t.Fatal(err)
	}
	// Two entries of 5 MiB each: over maxCachedBatchBytes, so the batch is not cached.
	big := bytes.Repeat([]byte("n"), 5<<20)
	fresh := []*raft.Log{
		{Index: 3, Term: 2, Type: raft.LogCommand, Data: big},
		{Index: 4, Term: 2, Type: raft.LogCommand, Data: big},
	}
	if err := s.StoreLogs(fresh); err != nil {
		t.Fatal(err)
	}
	for _, want := range fresh {
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", want.Index, err)
		}
		if got.Term != want.Term || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("GetLog(%d) = term %d, %d data bytes; want term %d, %d bytes (the truncated entry was served from the cache)",
				want.Index, got.Term, len(got.Data), want.Term, len(want.Data))
		}
	}
}
