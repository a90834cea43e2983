package wal_test

import (
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
	"github.com/raftkit/raft/wal"
)

// openStore opens a store in dir with small segments, so the suite crosses segment
// boundaries, and fsync off, so the suite stays fast (crash tests cover fsync).
func openStore(t testing.TB, dir string, opts ...wal.Option) *wal.Store {
	t.Helper()
	s, err := wal.Open(dir, append([]wal.Option{wal.WithNoSync(), wal.WithSegmentSize(8 << 10)}, opts...)...)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

// newStore returns a fresh store closed at the end of the test.
func newStore(t testing.TB, opts ...wal.Option) *wal.Store {
	s := openStore(t, t.TempDir(), opts...)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestStore_LogStoreConformance(t *testing.T) {
	storetest.TestLogStore(t, func(t *testing.T) raft.LogStore { return newStore(t) })
}

func TestStore_LogStoreConformanceWithoutCache(t *testing.T) {
	storetest.TestLogStore(t, func(t *testing.T) raft.LogStore { return newStore(t, wal.WithCacheEntries(0)) })
}

func TestStore_StableStoreConformance(t *testing.T) {
	storetest.TestStableStore(t, func(t *testing.T) raft.StableStore { return newStore(t) })
}

func TestStore_LogStoreReopen(t *testing.T) {
	storetest.TestLogStoreReopen(t, func(t *testing.T, dir string) raft.LogStore { return openStore(t, dir) })
}

func TestStore_LogStoreReopenWithSync(t *testing.T) {
	storetest.TestLogStoreReopen(t, func(t *testing.T, dir string) raft.LogStore {
		s, err := wal.Open(dir, wal.WithSegmentSize(8<<10))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestStore_StableStoreReopen(t *testing.T) {
	storetest.TestStableStoreReopen(t, func(t *testing.T, dir string) raft.StableStore { return openStore(t, dir) })
}
