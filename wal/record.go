package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/raftkit/raft"
)

// On-disk layout constants; doc.go describes the format they implement.
const (
	// recordHeaderBytes is the fixed part of every record: crc, data length, extensions
	// length, type, three reserved bytes, index, term.
	recordHeaderBytes = 32

	// segmentHeaderBytes is the fixed header at the start of every segment file.
	segmentHeaderBytes = 24

	// segmentVersion is the only segment format version this build reads and writes.
	segmentVersion = 1

	// MaxEntryBytes bounds the data plus extensions of one entry. It keeps a corrupt length
	// field from ever asking for more memory than this, on top of the bound by file size.
	MaxEntryBytes = 1 << 30
)

// segmentMagic opens every segment file.
const segmentMagic = "RKWALSEG"

// castagnoli is the CRC32C table; it is computed once and only ever read.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errShortRecord says the buffer ends before the record does: a torn write when it happens at
// the end of the last segment.
var errShortRecord = errors.New("record extends past the end of the data")

// recordHeader is the decoded fixed part of a record.
type recordHeader struct {
	crc     uint32
	dataLen uint32
	extLen  uint32
	typ     raft.LogType
	index   uint64
	term    uint64
}

// payloadBytes is the length of data plus extensions.
func (h *recordHeader) payloadBytes() int64 { return int64(h.dataLen) + int64(h.extLen) }

// parseRecordHeader decodes and sanity-checks the fixed part of a record. hdr must hold at
// least recordHeaderBytes bytes.
func parseRecordHeader(hdr []byte) (recordHeader, error) {
	h := recordHeader{
		crc:     binary.LittleEndian.Uint32(hdr[0:4]),
		dataLen: binary.LittleEndian.Uint32(hdr[4:8]),
		extLen:  binary.LittleEndian.Uint32(hdr[8:12]),
		typ:     raft.LogType(hdr[12]),
		index:   binary.LittleEndian.Uint64(hdr[16:24]),
		term:    binary.LittleEndian.Uint64(hdr[24:32]),
	}
	if hdr[13] != 0 || hdr[14] != 0 || hdr[15] != 0 {
		return h, errors.New("reserved header bytes not zero")
	}
	if h.payloadBytes() > MaxEntryBytes {
		return h, fmt.Errorf("record payload of %d bytes exceeds the %d byte limit", h.payloadBytes(), MaxEntryBytes)
	}
	return h, nil
}

// recordBytes is the encoded size of l.
func recordBytes(l *raft.Log) int { return recordHeaderBytes + len(l.Data) + len(l.Extensions) }

// appendRecord appends the encoding of l to dst. The caller checked the payload size.
func appendRecord(dst []byte, l *raft.Log) []byte {
	start := len(dst)
	dst = slices.Grow(dst, recordBytes(l))
	dst = dst[:start+recordHeaderBytes]
	hdr := dst[start:]
	binary.LittleEndian.PutUint32(hdr[4:8], uint32(len(l.Data)))
	binary.LittleEndian.PutUint32(hdr[8:12], uint32(len(l.Extensions)))
	hdr[12] = byte(l.Type)
	hdr[13], hdr[14], hdr[15] = 0, 0, 0
	binary.LittleEndian.PutUint64(hdr[16:24], l.Index)
	binary.LittleEndian.PutUint64(hdr[24:32], l.Term)
	dst = append(dst, l.Data...)
	dst = append(dst, l.Extensions...)
	binary.LittleEndian.PutUint32(dst[start:start+4], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}

// decodeRecord decodes the record at the start of buf and returns its length. The returned
// Data and Extensions alias buf (capacity-limited so appending to one never overwrites the
// other). It returns errShortRecord when buf ends inside the record, and another error when
// the record is malformed or fails its CRC.
func decodeRecord(buf []byte, l *raft.Log) (int, error) {
	if len(buf) < recordHeaderBytes {
		return 0, errShortRecord
	}
	h, err := parseRecordHeader(buf)
	if err != nil {
		return 0, err
	}
	total := int64(recordHeaderBytes) + h.payloadBytes()
	if total > int64(len(buf)) {
		return 0, errShortRecord
	}
	n := int(total)
	if got := crc32.Checksum(buf[4:n], castagnoli); got != h.crc {
		return 0, fmt.Errorf("record crc %08x, computed %08x", h.crc, got)
	}
	dataEnd := recordHeaderBytes + int(h.dataLen)
	*l = raft.Log{Index: h.index, Term: h.term, Type: h.typ}
	if h.dataLen > 0 {
		l.Data = buf[recordHeaderBytes:dataEnd:dataEnd]
	}
	if h.extLen > 0 {
		l.Extensions = buf[dataEnd:n:n]
	}
	return n, nil
}

// appendSegmentHeader appends the header of a segment whose first record has index base.
func appendSegmentHeader(dst []byte, base uint64) []byte {
	start := len(dst)
	dst = append(dst, segmentMagic...)
	dst = binary.LittleEndian.AppendUint64(dst, base)
	dst = binary.LittleEndian.AppendUint32(dst, segmentVersion)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// checkSegmentHeader verifies a segment header against the base index from the file name.
func checkSegmentHeader(hdr []byte, base uint64) error {
	if len(hdr) < segmentHeaderBytes {
		return errShortRecord
	}
	if string(hdr[:8]) != segmentMagic {
		return errors.New("bad segment magic")
	}
	if got, want := binary.LittleEndian.Uint32(hdr[20:24]), crc32.Checksum(hdr[:20], castagnoli); got != want {
		return fmt.Errorf("segment header crc %08x, computed %08x", got, want)
	}
	if v := binary.LittleEndian.Uint32(hdr[16:20]); v != segmentVersion {
		return fmt.Errorf("%w: segment format version %d, this build reads version %d", ErrUnsupportedVersion, v, segmentVersion)
	}
	if b := binary.LittleEndian.Uint64(hdr[8:16]); b != base {
		return fmt.Errorf("segment header base index %d, file name says %d", b, base)
	}
	return nil
}
