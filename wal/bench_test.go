package wal_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

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

// BenchmarkTargetBatch64x128VsFsync8KiB interleaves a StoreLogs of 64 entries of 128 B (fsync
// on) with a plain 8 KiB write+fsync on another file of the same file system, and reports the
// ratio of their total times ("store/fsync"), so noise from a shared disk hits both sides
// alike. The target is at most 1.5.
func BenchmarkTargetBatch64x128VsFsync8KiB(b *testing.B) {
	s := benchStore(b)
	f, err := os.Create(filepath.Join(b.TempDir(), "baseline"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	plain := make([]byte, 8<<10)
	logs := storetest.MakeLogs(1, 64, 1, 128)
	var storeTime, fsyncTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, l := range logs {
			l.Index = uint64(i*64 + j + 1)
		}
		start := time.Now()
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := f.Write(plain); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		storeTime += mid.Sub(start)
		fsyncTime += time.Since(mid)
	}
	b.ReportMetric(float64(storeTime)/float64(fsyncTime), "store/fsync")
	b.ReportMetric(float64(storeTime.Microseconds())/float64(b.N), "store-µs/op")
	b.ReportMetric(float64(fsyncTime.Microseconds())/float64(b.N), "fsync-µs/op")
}
