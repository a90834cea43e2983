package raft

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

func newFileSnapshotStore(t *testing.T, dir string, retain int) *FileSnapshotStore {
	t.Helper()
	s, err := NewFileSnapshotStore(dir, retain, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// snapshotDirEntries returns the names under the store's directory, sorted, without the lock
// file.
func snapshotDirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, fileSnapshotSubdir))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range entries {
		if e.Name() != fileSnapshotLock {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

func TestFileSnapshotStore_RejectsRetainBelowOne(t *testing.T) {
	if _, err := NewFileSnapshotStore(t.TempDir(), 0, nil); err == nil {
		t.Fatal("retain 0 accepted")
	}
}

func TestFileSnapshotStore_KeepsNewestRetainAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s := newFileSnapshotStore(t, dir, 2)
	var ids []string
	for i := range uint64(5) {
		ids = append(ids, createSnapshot(t, s, 1, 10*(i+1), fmt.Sprint("data", i)))
	}
	want := []string{ids[4], ids[3]}
	if got := listedIDs(t, s); !reflect.DeepEqual(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	if got := snapshotDirEntries(t, dir); !reflect.DeepEqual(got, []string{ids[3], ids[4]}) {
		t.Fatalf("directory holds %v, want only the two newest", got)
	}
	// A new store on the same directory finds them, once the first one let go of it.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := newFileSnapshotStore(t, dir, 2)
	if got := listedIDs(t, reopened); !reflect.DeepEqual(got, want) {
		t.Fatalf("List after reopening = %v, want %v", got, want)
	}
	if _, data, err := readSnapshot(reopened, ids[4]); err != nil || data != "data4" {
		t.Fatalf("reading after reopening: %q, %v", data, err)
	}
}

// damagedSnapshotStore returns a store with two snapshots, the newer one, holding "the data",
// with its file name rewritten by change.
func damagedSnapshotStore(t *testing.T, name string, change func([]byte) []byte) (s *FileSnapshotStore, older, damaged string) {
	t.Helper()
	dir := t.TempDir()
	s = newFileSnapshotStore(t, dir, 2)
	older = createSnapshot(t, s, 1, 1, "older")
	damaged = createSnapshot(t, s, 1, 2, "the data")
	path := filepath.Join(dir, fileSnapshotSubdir, damaged, name)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, change(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return s, older, damaged
}

func TestFileSnapshotStore_DetectsCorruptData(t *testing.T) {
	cases := []struct {
		name     string
		change   func([]byte) []byte
		atOpen   bool // detected by Open rather than by the reader
		wantRead string
	}{
		{"flipped byte", func(b []byte) []byte { b[3] ^= 0x40; return b }, false, "the data"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, true, ""},
		{"extended", func(b []byte) []byte { return append(b, 'x') }, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, older, id := damagedSnapshotStore(t, fileSnapshotData, tc.change)

			// The corrupt snapshot is still listed: List does not read data.
			if got := listedIDs(t, s); !reflect.DeepEqual(got, []string{id, older}) {
				t.Fatalf("List = %v, want [%s %s]", got, id, older)
			}
			_, rc, err := s.Open(id)
			if tc.atOpen {
				if !errors.Is(err, ErrSnapshotCorrupt) {
					t.Fatalf("Open: %v, want ErrSnapshotCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer rc.Close()
			data, err := io.ReadAll(rc)
			if !errors.Is(err, ErrSnapshotCorrupt) || len(data) != len(tc.wantRead) {
				t.Fatalf("reading: %d bytes, %v; want %d bytes then ErrSnapshotCorrupt", len(data), err, len(tc.wantRead))
			}
			if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("reading again: %v, want ErrSnapshotCorrupt again", err)
			}
		})
	}
}

func TestFileSnapshotStore_DetectsTornMeta(t *testing.T) {
	cases := []struct {
		name   string
		change func([]byte) []byte
	}{
		{"torn", func(b []byte) []byte { return b[:len(b)/2] }},
		{"empty", func([]byte) []byte { return nil }},
		{"other snapshot's", func(b []byte) []byte { return bytes.Replace(b, []byte(`"Index":2`), []byte(`"Index":3`), 1) }},
		{"negative size", func(b []byte) []byte { return bytes.Replace(b, []byte(`"Size":8`), []byte(`"Size":-8`), 1) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, older, id := damagedSnapshotStore(t, fileSnapshotMetaName, tc.change)

			// List skips what it cannot describe, so the caller falls back to the older one.
			if got := listedIDs(t, s); !reflect.DeepEqual(got, []string{older}) {
				t.Fatalf("List = %v, want [%s]", got, older)
			}
			if _, _, err := s.Open(id); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("Open: %v, want ErrSnapshotCorrupt", err)
			}
		})
	}
}

func TestFileSnapshotStore_RemovesCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := newFileSnapshotStore(t, dir, 2)
	kept := createSnapshot(t, s, 1, 1, "kept")
	// A crash while writing, and one while deleting an old snapshot.
	crashed, err := s.Create(SnapshotVersion, 5, 1, testConfiguration(), 1)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(crashed, "half")
	base := filepath.Join(dir, fileSnapshotSubdir)
	if err := os.MkdirAll(filepath.Join(base, "1-0-1"+fileSnapshotDelSuffix), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := listedIDs(t, s); !reflect.DeepEqual(got, []string{kept}) {
		t.Fatalf("List with leftovers = %v, want [%s]", got, kept)
	}

	// Create keeps the temporary directory of the sink still open.
	s2 := newFileSnapshotStore(t, t.TempDir(), 2)
	open, err := s2.Create(SnapshotVersion, 1, 1, testConfiguration(), 1)
	if err != nil {
		t.Fatal(err)
	}
	next, err := s2.Create(SnapshotVersion, 2, 1, testConfiguration(), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, sink := range []SnapshotSink{open, next} {
		if err := sink.Close(); err != nil {
			t.Fatalf("Close of a sink created before another: %v", err)
		}
	}

	// The restarted node's store removes what the crash left (the crash released the lock).
	s.Close()
	restarted := newFileSnapshotStore(t, dir, 2)
	if got := snapshotDirEntries(t, dir); !reflect.DeepEqual(got, []string{kept}) {
		t.Fatalf("after restart the directory holds %v, want [%s]", got, kept)
	}
	if got := listedIDs(t, restarted); !reflect.DeepEqual(got, []string{kept}) {
		t.Fatalf("List after restart = %v, want [%s]", got, kept)
	}
}

func TestFileSnapshotStore_CancelRemovesTempDir(t *testing.T) {
	dir := t.TempDir()
	s := newFileSnapshotStore(t, dir, 2)
	sink, err := s.Create(SnapshotVersion, 1, 1, testConfiguration(), 1)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(sink, "abandoned")
	if got := snapshotDirEntries(t, dir); len(got) != 1 || !strings.HasSuffix(got[0], fileSnapshotTmpSuffix) {
		t.Fatalf("while writing the directory holds %v, want one temporary directory", got)
	}
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}
	if got := snapshotDirEntries(t, dir); len(got) != 0 {
		t.Fatalf("after Cancel the directory holds %v", got)
	}
}

// snapshotContent is the data of the test snapshot at index: derived from it, so a reader can
// tell it read the right snapshot whole.
func snapshotContent(index uint64) string {
	return strings.Repeat(fmt.Sprintf("<%d>", index), int(index%50)+100)
}

func TestFileSnapshotStore_ListAndOpenWhileCreating(t *testing.T) {
	s := newFileSnapshotStore(t, t.TempDir(), 2)
	const snapshots = 40
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var mu sync.Mutex
	reads, gone := 0, 0
	for range 3 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				metas, err := s.List()
				if err != nil {
					t.Errorf("List: %v", err)
					return
				}
				for _, m := range metas {
					_, data, err := readSnapshot(s, m.ID)
					mu.Lock()
					switch {
					case errors.Is(err, ErrSnapshotNotFound):
						gone++ // deleted as an old snapshot after List
					case err != nil || data != snapshotContent(m.Index):
						t.Errorf("snapshot %s: read %d bytes, %v", m.ID, len(data), err)
					default:
						reads++
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range uint64(snapshots) {
		createSnapshot(t, s, 1, i+1, snapshotContent(i+1))
	}
	close(stop)
	readers.Wait()
	if got := listedIDs(t, s); len(got) != 2 {
		t.Fatalf("List = %v, want the 2 retained", got)
	}
	t.Logf("%d whole reads, %d snapshots gone before they were opened", reads, gone)
	if reads == 0 {
		t.Fatal("readers read no snapshot")
	}
}

// patternReader yields size bytes of a fixed pattern without holding them.
type patternReader struct{ remaining int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.remaining == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.remaining)]
	for i := range p {
		p[i] = byte(i * 7)
	}
	r.remaining -= int64(len(p))
	return len(p), nil
}

func TestFileSnapshotStore_StreamsLargeSnapshot(t *testing.T) {
	size := int64(50 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	s := newFileSnapshotStore(t, t.TempDir(), 1)
	sink, err := s.Create(SnapshotVersion, 1, 1, testConfiguration(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(sink, &patternReader{remaining: size}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	meta, rc, err := s.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	runtime.ReadMemStats(&after)
	if err != nil || n != size || meta.Size != size {
		t.Fatalf("read %d bytes, %v (meta says %d); want %d", n, err, meta.Size, size)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("reading a %d MiB snapshot allocated %d KiB: it must stream", size>>20, alloc>>10)
	}
}
