package wal

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/raftkit/raft/storetest"
)

// BenchmarkOpen measures Open of a store whose one segment holds 32 MiB of 128-byte entries,
// clean and with one flipped byte near the start of the last segment (the damage
// classification then scans the rest of the file for an intact record before it reports
// ErrCorrupt). go test -run XXX -bench Open ./wal/
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir, WithNoSync(), WithSegmentSize(1<<30))
	if err != nil {
		b.Fatal(err)
	}
	var idx uint64 = 1
	for range 1024 {
		batch := storetest.MakeLogs(idx, 200, 1, 128)
		if err := s.StoreLogs(batch); err != nil {
			b.Fatal(err)
		}
		idx += 200
	}
	s.Close()
	damaged := copyDir(b, dir)
	flipByte(b, filepath.Join(damaged, segmentName(1)), 100, 0x01)
	b.Run("clean", func(b *testing.B) {
		for b.Loop() {
			s, err := Open(dir, WithNoSync())
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	})
	b.Run("damaged", func(b *testing.B) {
		for b.Loop() {
			if _, err := Open(damaged, WithNoSync()); !errors.Is(err, ErrCorrupt) {
				b.Fatalf("Open: %v", err)
			}
		}
	})
}
