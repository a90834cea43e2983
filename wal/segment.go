package wal

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// segmentSuffix ends every segment file name; the stem is the base index in 20 decimal
// digits, so names sort in log order.
const segmentSuffix = ".wal"

// scanBufferBytes is the read buffer used to verify a segment at Open: large enough to keep
// the number of read calls low, small enough not to matter next to the index.
const scanBufferBytes = 256 << 10

// segment is one log file. base and path never change. The other fields change only while
// the Store's writeMu and mu are both held; readers use them under mu.RLock, the writer
// (holding writeMu) may read them without mu.
type segment struct {
	base uint64 // index of the first record
	path string
	f    *os.File // opened read-write; ReadAt and WriteAt are safe concurrently

	offsets []int64 // offsets[i] is the file offset of the record with index base+i
	size    int64   // end of the last record: where the next one goes
}

// segmentName returns the file name of the segment starting at base.
func segmentName(base uint64) string { return fmt.Sprintf("%020d%s", base, segmentSuffix) }

// parseSegmentName returns the base index a segment file name encodes.
func parseSegmentName(name string) (uint64, bool) {
	stem, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(stem) != 20 {
		return 0, false
	}
	base, err := strconv.ParseUint(stem, 10, 64)
	return base, err == nil
}

// lastIndex returns the index of the last record, or base-1 when the segment holds none.
func (s *segment) lastIndex() uint64 { return s.base + uint64(len(s.offsets)) - 1 }

// recordSpan returns where the record with the given index starts and ends.
func (s *segment) recordSpan(index uint64) (start, end int64) {
	i := index - s.base
	start = s.offsets[i]
	if i+1 < uint64(len(s.offsets)) {
		return start, s.offsets[i+1]
	}
	return start, s.size
}

// listSegments returns the bases of the segment files in dir, in order.
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var bases []uint64
	for _, e := range entries {
		if base, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			bases = append(bases, base)
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}

// createSegment creates an empty segment file for base. Its header is written together with
// the first batch (see Store.appendBatch), so size starts at 0.
func createSegment(dir string, base uint64) (*segment, error) {
	path := filepath.Join(dir, segmentName(base))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	return &segment{base: base, path: path, f: f}, nil
}

// scanProblem describes the first bad byte range found while scanning a segment.
type scanProblem struct {
	offset    int64 // where the first bad record (or the bad header) starts
	reason    string
	torn      bool  // the data simply ends early, as after an interrupted write
	fileBytes int64 // size of the whole file
}

func (p *scanProblem) Error() string { return fmt.Sprintf("at offset %d: %s", p.offset, p.reason) }

// openSegment opens the segment file for base and verifies every record in it: header,
// CRC32C, reserved bytes, and consecutive indexes starting at base. It fills offsets and size
// with the good records; a non-nil *scanProblem says where the good part ends and why.
func openSegment(dir string, base uint64) (*segment, *scanProblem, error) {
	path := filepath.Join(dir, segmentName(base))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	s := &segment{base: base, path: path, f: f}
	prob, err := s.scan(st.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("wal: read %s: %w", path, err)
	}
	if prob != nil {
		prob.fileBytes = st.Size()
	}
	return s, prob, nil
}

// scan reads the file from the start, stopping at the first problem.
func (s *segment) scan(fileBytes int64) (*scanProblem, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, fileBytes), scanBufferBytes)
	var hdr [recordHeaderBytes]byte
	if fileBytes < segmentHeaderBytes {
		return &scanProblem{offset: 0, reason: "segment header cut short", torn: true}, nil
	}
	if _, err := io.ReadFull(r, hdr[:segmentHeaderBytes]); err != nil {
		return nil, err
	}
	if err := checkSegmentHeader(hdr[:segmentHeaderBytes], s.base); err != nil {
		if errors.Is(err, ErrUnsupportedVersion) {
			return nil, err // written by a newer release: refuse, never cut
		}
		return &scanProblem{offset: 0, reason: err.Error()}, nil
	}
	pos := int64(segmentHeaderBytes)
	s.size = pos
	for pos < fileBytes {
		n, prob, err := s.scanRecord(r, hdr[:], pos, fileBytes)
		if prob != nil || err != nil {
			return prob, err
		}
		s.offsets = append(s.offsets, pos)
		pos += n
		s.size = pos
	}
	return nil, nil
}

// scanRecord verifies the record at pos, streaming its payload through the CRC so that memory
// use does not depend on the lengths read from disk.
func (s *segment) scanRecord(r io.Reader, hdr []byte, pos, fileBytes int64) (int64, *scanProblem, error) {
	if fileBytes-pos < recordHeaderBytes {
		return 0, &scanProblem{offset: pos, reason: "record header cut short", torn: true}, nil
	}
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, err
	}
	h, err := parseRecordHeader(hdr)
	if err != nil {
		return 0, &scanProblem{offset: pos, reason: err.Error()}, nil
	}
	n := recordHeaderBytes + h.payloadBytes()
	if n > fileBytes-pos {
		return 0, &scanProblem{offset: pos, reason: errShortRecord.Error(), torn: true}, nil
	}
	crc := crc32.New(castagnoli)
	crc.Write(hdr[4:])
	if _, err := io.CopyN(crc, r, h.payloadBytes()); err != nil {
		return 0, nil, err
	}
	if got := crc.Sum32(); got != h.crc {
		return 0, &scanProblem{offset: pos, reason: fmt.Sprintf("record crc %08x, computed %08x", h.crc, got)}, nil
	}
	if want := s.base + uint64(len(s.offsets)); h.index != want {
		return 0, &scanProblem{offset: pos, reason: fmt.Sprintf("record index %d, expected %d", h.index, want)}, nil
	}
	return n, nil, nil
}

// cut truncates the file to its good part and makes that durable.
func (s *segment) cut(noSync bool) error {
	if err := s.f.Truncate(s.size); err != nil {
		return err
	}
	if noSync {
		return nil
	}
	return s.f.Sync()
}

// remove closes and deletes the file. A file already gone counts as removed.
func (s *segment) remove() error {
	s.f.Close()
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
