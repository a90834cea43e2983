package storetest

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/raftkit/raft"
)

// getLogPrefill is how many entries BenchmarkGetLog stores before it measures: several times
// a typical recent-entry cache, so most reads go to the store's backing medium.
const getLogPrefill = 8192

// BenchmarkStoreLogs measures StoreLogs with batches of batch entries of size bytes each,
// appending to one store for the whole run. It reports MB/s of entry data (b.SetBytes),
// entries/s, and allocations per batch.
func BenchmarkStoreLogs(b *testing.B, newStore func(b *testing.B) raft.LogStore, batch, size int) {
	s := newStore(b)
	logs := MakeLogs(1, batch, 1, size)
	b.SetBytes(int64(batch * size))
	b.ReportAllocs()
	b.ResetTimer()
	next := uint64(1)
	for i := 0; i < b.N; i++ {
		for j, l := range logs {
			l.Index = next + uint64(j)
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatalf("StoreLogs: %v", err)
		}
		next += uint64(batch)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkGetLog measures GetLog on a store prefilled with getLogPrefill entries of size
// bytes, reading them in order (random false) or at indexes drawn from a fixed-seed PRNG. It
// reports MB/s of entry data, entries/s and allocations per read.
func BenchmarkGetLog(b *testing.B, newStore func(b *testing.B) raft.LogStore, size int, random bool) {
	s := newStore(b)
	for i := 0; i < getLogPrefill; i += 256 {
		if err := s.StoreLogs(MakeLogs(uint64(i+1), 256, 1, size)); err != nil {
			b.Fatalf("StoreLogs: %v", err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	order := make([]uint64, getLogPrefill)
	for i := range order {
		order[i] = uint64(i + 1)
		if random {
			order[i] = 1 + rng.Uint64N(getLogPrefill)
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	var l raft.Log
	for i := 0; i < b.N; i++ {
		if err := s.GetLog(order[i%len(order)], &l); err != nil {
			b.Fatalf("GetLog: %v", err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkLogStore runs the standard set as sub-benchmarks: StoreLogs with batches of 1, 64
// and 512 entries of 128 B and 4 KiB ("StoreLogs/batch=64/size=128"), then GetLog in order and
// at random of 128 B and 4 KiB entries ("GetLog/random/size=128"). Each sub-benchmark gets a
// new store from newStore.
func BenchmarkLogStore(b *testing.B, newStore func(b *testing.B) raft.LogStore) {
	sizes := []int{128, 4096}
	for _, size := range sizes {
		for _, batch := range []int{1, 64, 512} {
			b.Run(fmt.Sprintf("StoreLogs/batch=%d/size=%d", batch, size), func(b *testing.B) {
				BenchmarkStoreLogs(b, newStore, batch, size)
			})
		}
	}
	for _, size := range sizes {
		for _, order := range []string{"sequential", "random"} {
			b.Run(fmt.Sprintf("GetLog/%s/size=%d", order, size), func(b *testing.B) {
				BenchmarkGetLog(b, newStore, size, order == "random")
			})
		}
	}
}
