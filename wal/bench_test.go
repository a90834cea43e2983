package wal_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
	"github.com/raftkit/raft/wal"
)

// benchStore returns a store with default segment size, closed when the benchmark ends.
func benchStore(b *testing.B, opts ...wal.Option) raft.LogStore {
	s, err := wal.Open(b.TempDir(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	return s
}

// BenchmarkStore runs the storetest set with fsync on (the default) and off.
func BenchmarkStore(b *testing.B) {
	b.Run("fsync=on", func(b *testing.B) {
		storetest.BenchmarkLogStore(b, func(b *testing.B) raft.LogStore { return benchStore(b) })
	})
	b.Run("fsync=off", func(b *testing.B) {
		storetest.BenchmarkLogStore(b, func(b *testing.B) raft.LogStore { return benchStore(b, wal.WithNoSync()) })
	})
}

// BenchmarkInmemBaseline runs the same set on raft.InmemStore, for comparison in one run.
func BenchmarkInmemBaseline(b *testing.B) {
	storetest.BenchmarkLogStore(b, func(*testing.B) raft.LogStore { return raft.NewInmemStore() })
}

// BenchmarkFsyncBaseline measures the disk's limit: append one write of the given size to a
// file and fsync it, in a loop, on the same file system as the store benchmarks.
func BenchmarkFsyncBaseline(b *testing.B) {
	for _, size := range []int{128, 8 << 10, 64 << 10} {
		b.Run("write="+byteSize(size), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "baseline"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}
