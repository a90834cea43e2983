package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/raftkit/raft"
)

// MakeLog returns a deterministic entry for index and term with size bytes of data: the same
// arguments always give equal entries, different ones differ in data. Every third entry has
// extensions, the rest none, and the type cycles through the valid types.
func MakeLog(index, term uint64, size int) *raft.Log {
	l := &raft.Log{
		Index: index,
		Term:  term,
		Type:  raft.LogType(index%4) + raft.LogCommand,
		Data:  fill(index*0x9E3779B97F4A7C15^term, size),
	}
	if index%3 == 0 {
		l.Extensions = []byte(fmt.Sprintf("ext-%d-%d", index, term))
	}
	return l
}

// MakeLogs returns n entries from MakeLog with consecutive indexes starting at first.
func MakeLogs(first uint64, n int, term uint64, size int) []*raft.Log {
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = MakeLog(first+uint64(i), term, size)
	}
	return logs
}

// fill returns size pseudo-random bytes from a xorshift generator seeded by seed.
func fill(seed uint64, size int) []byte {
	if size == 0 {
		return nil
	}
	x := seed | 1
	b := make([]byte, size)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// EqualLog reports whether two entries are equal, treating nil and empty slices alike.
func EqualLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions)
}

// mustStore stores logs as one batch or fails the test.
func mustStore(t testing.TB, s raft.LogStore, logs []*raft.Log) {
	t.Helper()
	if err := s.StoreLogs(logs); err != nil {
		t.Fatalf("StoreLogs [%d, %d]: %v", logs[0].Index, logs[len(logs)-1].Index, err)
	}
}

// mustDelete deletes [min, max] or fails the test.
func mustDelete(t testing.TB, s raft.LogStore, min, max uint64) {
	t.Helper()
	if err := s.DeleteRange(min, max); err != nil {
		t.Fatalf("DeleteRange(%d, %d): %v", min, max, err)
	}
}

// CheckLogs fails the test unless s holds exactly want (consecutive entries; nil or empty for
// an empty log): the bounds, every entry, and ErrLogNotFound just outside the bounds.
func CheckLogs(t testing.TB, s raft.LogStore, want []*raft.Log) {
	t.Helper()
	var wantFirst, wantLast uint64
	if len(want) > 0 {
		wantFirst, wantLast = want[0].Index, want[len(want)-1].Index
	}
	first, err := s.FirstIndex()
	if err != nil || first != wantFirst {
		t.Fatalf("FirstIndex = %d, %v; want %d", first, err, wantFirst)
	}
	last, err := s.LastIndex()
	if err != nil || last != wantLast {
		t.Fatalf("LastIndex = %d, %v; want %d", last, err, wantLast)
	}
	for _, w := range want {
		var got raft.Log
		if err := s.GetLog(w.Index, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", w.Index, err)
		}
		if !EqualLog(&got, w) {
			t.Fatalf("GetLog(%d) = %+v, want %+v", w.Index, got, *w)
		}
	}
	for _, idx := range []uint64{wantFirst - 1, wantLast + 1} {
		if idx == 0 && wantFirst == 0 {
			continue
		}
		checkNotFound(t, s, idx)
	}
}

// checkNotFound fails the test unless GetLog(index) fails with ErrLogNotFound.
func checkNotFound(t testing.TB, s raft.LogStore, index uint64) {
	t.Helper()
	var got raft.Log
	if err := s.GetLog(index, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(%d) = %v, want an error wrapping raft.ErrLogNotFound", index, err)
	}
}
