package wal

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

// testOpen opens dir with fsync off and 4 KiB segments, failing the test on error.
func testOpen(t testing.TB, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, append([]Option{WithNoSync(), WithSegmentSize(4 << 10)}, opts...)...)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

// mustClose closes s, failing the test on error.
func mustClose(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// fillStore appends batches of 1..7 entries of varying sizes until the log holds n entries,
// and returns them.
func fillStore(t testing.TB, s *Store, n int) []*raft.Log {
	t.Helper()
	var model []*raft.Log
	for len(model) < n {
		size := min(1+len(model)%7, n-len(model))
		batch := make([]*raft.Log, size)
		for i := range batch {
			idx := uint64(len(model) + i + 1)
			batch[i] = storetest.MakeLog(idx, 1, int(idx*37%300))
		}
		if err := s.StoreLogs(batch); err != nil {
			t.Fatalf("StoreLogs: %v", err)
		}
		model = append(model, batch...)
	}
	return model
}

// copyDir copies the regular files of src into a new temp dir and returns it.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
	}
	return dst
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// segmentFiles lists the segment file names in dir, in order.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	bases, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(bases))
	for i, b := range bases {
		names[i] = segmentName(b)
	}
	return names
}

// layout is where each record of the last segment starts and ends, taken from a live store.
type layout struct {
	name       string  // file name, without the directory
	firstIndex uint64  // index of the segment's first record
	starts     []int64 // file offset of each record
	size       int64   // end of the last record
}

func lastSegmentLayout(s *Store) layout {
	s.mu.RLock()
	defer s.mu.RUnlock()
	seg := s.segs[len(s.segs)-1]
	return layout{name: filepath.Base(seg.path), firstIndex: seg.base, starts: append([]int64(nil), seg.offsets...), size: seg.size}
}

// survivors returns how many entries of the whole log survive damage at offset off of the
// last segment: every record that ends at or before off.
func (l layout) survivors(off int64) uint64 {
	n := l.firstIndex - 1
	for i := range l.starts {
		end := l.size
		if i+1 < len(l.starts) {
			end = l.starts[i+1]
		}
		if end > off {
			break
		}
		n++
	}
	return n
}

// isBoundary reports whether off is the start of the file, the end of the header or the end
// of a record, so cutting there leaves nothing torn.
func (l layout) isBoundary(off int64) bool {
	if off == 0 || off == l.size {
		return true
	}
	for _, start := range l.starts {
		if start == off {
			return true
		}
	}
	return false
}
