package wal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raftkit/raft/storetest"
)

// The corruption nemesis (issue 16) saw a node on WithNoSync stores start without error having
// lost acknowledged entries: a flipped bit in a record's length field made the record claim
// more bytes than the file holds, Open took that for a write cut short at the end, and with
// fsync off it cut the segment there although intact records followed. Every single-byte flip
// in the active segment must be ErrCorrupt naming the file, with the bytes kept, with fsync
// off as with fsync on.
func TestOpen_NoSyncEveryByteFlipInActiveSegmentIsErrCorrupt(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir, WithSegmentSize(64<<20))
	const n = 8
	for i := uint64(1); i <= n; i++ {
		if err := s.StoreLog(storetest.MakeLog(i, 1, 12)); err != nil {
			t.Fatal(err)
		}
	}
	lay := lastSegmentLayout(s)
	mustClose(t, s)
	for off := int64(0); off < lay.size; off++ {
		for _, mask := range []byte{0x01, 0x80} {
			d := copyDir(t, dir)
			path := filepath.Join(d, lay.name)
			flipByte(t, path, off, mask)
			before := dirDigest(t, d)
			s, err := Open(d, WithNoSync())
			if err == nil {
				last, _ := s.LastIndex()
				rep := s.OpenReport()
				s.Close()
				t.Fatalf("byte %d ^ %#x: Open succeeded with LastIndex %d of %d (cut: %q)", off, mask, last, n, rep.CutReason)
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("byte %d ^ %#x: Open error %q does not wrap ErrCorrupt or name %s", off, mask, err, path)
			}
			if dirDigest(t, d) != before {
				t.Fatalf("byte %d ^ %#x: failed Open changed the directory", off, mask)
			}
		}
	}
}

// The same length-field flip, in entry 3 of 8: the message says why it is not a torn tail.
func TestOpen_NoSyncFlippedLengthWithRecordsAfterItIsErrCorrupt(t *testing.T) {
	dir, _, lay := oneByOne(t, 8)
	off := lay.starts[2] + 5 // the second byte of entry 3's data length
	flipByte(t, filepath.Join(dir, lay.name), off, 0x10)
	_, err := Open(dir, WithNoSync())
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "length field is damaged") {
		t.Fatalf("Open: %v, want ErrCorrupt saying the length field is damaged", err)
	}
}

// A record genuinely cut short at the end of the last segment is still a torn tail with fsync
// off: it is cut and the entries before it are kept.
func TestOpen_NoSyncRecordCutShortAtTheEndIsCut(t *testing.T) {
	dir, model, lay := oneByOne(t, 8)
	last := lay.starts[len(lay.starts)-1]
	for _, size := range []int64{last + 3, last + recordHeaderBytes, lay.size - 1} {
		d := copyDir(t, dir)
		if err := os.Truncate(filepath.Join(d, lay.name), size); err != nil {
			t.Fatal(err)
		}
		s := testOpen(t, d, WithSegmentSize(64<<20))
		if rep := s.OpenReport(); !rep.TailCut || rep.LastIndex != 7 {
			t.Fatalf("file cut to %d bytes: report %+v, want the torn record cut leaving 7 entries", size, rep)
		}
		storetest.CheckLogs(t, s, model[:7])
		mustClose(t, s)
	}
}
