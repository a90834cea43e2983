package wal

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// tornSectorBytes is the unit in which a disk loses an interrupted write: a sector of an
// unsynced write that never reached the platter reads back as zeros (or the file simply ends
// early). A flipped bit, a misdirected write or a firmware bug leaves something else.
const tornSectorBytes = 512

// tailVerdict says whether the damage found at the end of the last segment is the torn tail
// of an interrupted write (cut it) or corruption (keep the bytes and refuse to open).
//
// The rule, documented in doc.go and README.md: damage at offset X of the last segment is a
// torn tail only when
//  1. no intact record with a later index lies anywhere after X (so X is inside the last
//     batch ever written: batches are written one at a time, each after the previous one's
//     fsync returned, so an intact record after the damage proves the damaged one was
//     synced), and
//  2. the damage looks like an interrupted write: the file ends inside the record (and the
//     bytes to the end of the file are not a complete record with a damaged length field),
//     or the record holds a zeroed sector.
//
// Everything else, a checksum mismatch in a record that is all there, say, is ErrCorrupt.
// With WithNoSync nothing is ever synced, so for a zeroed sector condition 1 proves nothing
// and only condition 2 applies. A record that runs past the end of the file is different:
// an intact record after its header shows the file does not end inside it, so its length
// field is damaged (a bit flip), and that is ErrCorrupt with or without fsync.
func (s *Store) tailIsTorn(seg *segment, prob *scanProblem) (bool, string, error) {
	fileBytes := prob.fileBytes
	if prob.offset == 0 && fileBytes < segmentHeaderBytes {
		return true, "", nil // the header of a new segment was being written
	}
	looksTorn, err := seg.looksInterrupted(prob, fileBytes)
	if err != nil {
		return false, "", fmt.Errorf("wal: read %s: %w", seg.path, err)
	}
	if !looksTorn {
		return false, "the damaged record is complete and holds no zeroed sector: not an interrupted write", nil
	}
	if s.opts.noSync && !prob.torn {
		// Without fsync nothing was ever synced: after a machine crash any unwritten
		// sector may read as zeros, with later batches intact after it. The caller chose
		// to lose the tail in that case (WithNoSync), so condition 1 does not apply.
		return true, "", nil
	}
	later, err := seg.intactRecordAfter(prob.offset, fileBytes)
	if err != nil {
		return false, "", fmt.Errorf("wal: read %s: %w", seg.path, err)
	}
	if later >= 0 && prob.torn {
		return false, fmt.Sprintf("an intact record follows at offset %d, so the file does not end inside the damaged record: its length field is damaged", later), nil
	}
	if later >= 0 {
		return false, fmt.Sprintf("an intact record follows at offset %d, so the damaged data had been synced", later), nil
	}
	return true, "", nil
}

// intactRecordAfter looks, byte by byte after the damage at from, for a record that verifies
// and carries an index after the segment's last good record. It returns its offset, or -1.
// It reads the tail once through a buffer and each candidate's payload with positioned
// reads, so it costs one pass over the damaged tail and runs only when Open found damage.
func (seg *segment) intactRecordAfter(from, fileBytes int64) (int64, error) {
	next := seg.base + uint64(len(seg.offsets)) // the index the damaged record should have
	if from == 0 {
		from = 1 // a damaged header: records could start anywhere after it
	}
	r := bufio.NewReaderSize(io.NewSectionReader(seg.f, from, fileBytes-from), scanBufferBytes)
	window := make([]byte, 0, recordHeaderBytes)
	for pos := from; pos+recordHeaderBytes <= fileBytes; pos++ {
		if len(window) == recordHeaderBytes {
			copy(window, window[1:])
			window = window[:recordHeaderBytes-1]
		}
		for len(window) < recordHeaderBytes {
			b, err := r.ReadByte()
			if err != nil {
				return -1, err
			}
			window = append(window, b)
		}
		ok, err := seg.verifiesAt(window, pos, fileBytes, next)
		if err != nil {
			return -1, err
		}
		if ok {
			return pos, nil
		}
	}
	return -1, nil
}

// verifiesAt says whether hdr, read at pos, starts a whole record that passes its CRC and
// whose index is at least next (and no further than the records left in the file allow).
func (seg *segment) verifiesAt(hdr []byte, pos, fileBytes int64, next uint64) (bool, error) {
	h, err := parseRecordHeader(hdr)
	if err != nil || h.index < next || h.index-next > uint64(fileBytes/recordHeaderBytes) {
		return false, nil
	}
	if recordHeaderBytes+h.payloadBytes() > fileBytes-pos {
		return false, nil
	}
	crc := crc32.New(castagnoli)
	crc.Write(hdr[4:])
	if _, err := io.Copy(crc, io.NewSectionReader(seg.f, pos+recordHeaderBytes, h.payloadBytes())); err != nil {
		return false, err
	}
	return crc.Sum32() == h.crc, nil
}

// looksInterrupted says whether the damaged record at prob.offset looks like an interrupted
// write (see tailIsTorn, condition 2).
func (seg *segment) looksInterrupted(prob *scanProblem, fileBytes int64) (bool, error) {
	end := fileBytes
	var hdr [recordHeaderBytes]byte
	n, err := seg.f.ReadAt(hdr[:], prob.offset)
	if err != nil && err != io.EOF {
		return false, err
	}
	h, herr := parseRecordHeader(hdr[:])
	if prob.offset > 0 && n == recordHeaderBytes && herr == nil {
		if claimed := prob.offset + recordHeaderBytes + h.payloadBytes(); claimed <= fileBytes {
			end = claimed
		} else if prob.torn {
			// The file ends inside the claimed record. A prefix of a record can not be
			// checked, but a complete record whose length field was damaged can be.
			whole, err := seg.completeWithBadLength(hdr[:], prob.offset, fileBytes)
			return !whole, err
		}
	} else if prob.torn {
		return true, nil // the file ends inside the record header
	}
	return seg.hasZeroedSector(prob.offset, end)
}

// completeWithBadLength says whether the bytes from pos to the end of the file form a whole
// record once its data or extensions length is corrected: a flipped length bit in the last
// record, not a torn write.
func (seg *segment) completeWithBadLength(hdr []byte, pos, fileBytes int64) (bool, error) {
	payload := fileBytes - pos - recordHeaderBytes
	if payload < 0 || payload > MaxEntryBytes {
		return false, nil
	}
	body := make([]byte, payload)
	if _, err := seg.f.ReadAt(body, pos+recordHeaderBytes); err != nil {
		return false, err
	}
	want := binary.LittleEndian.Uint32(hdr[0:4])
	dataLen := int64(binary.LittleEndian.Uint32(hdr[4:8]))
	extLen := int64(binary.LittleEndian.Uint32(hdr[8:12]))
	for _, lens := range [][2]int64{{payload - extLen, extLen}, {dataLen, payload - dataLen}} {
		if lens[0] < 0 || lens[1] < 0 {
			continue
		}
		fixed := append([]byte(nil), hdr[4:recordHeaderBytes]...)
		binary.LittleEndian.PutUint32(fixed[0:4], uint32(lens[0]))
		binary.LittleEndian.PutUint32(fixed[4:8], uint32(lens[1]))
		crc := crc32.Update(crc32.Checksum(fixed, castagnoli), castagnoli, body)
		if crc == want {
			return true, nil
		}
	}
	return false, nil
}

// hasZeroedSector says whether [start, end) holds a disk sector's worth of zeros: the part of
// some tornSectorBytes-aligned sector that lies in the range is all zero and at least a record
// header long (or the whole range, when that is shorter).
func (seg *segment) hasZeroedSector(start, end int64) (bool, error) {
	if end <= start {
		return false, nil
	}
	buf := make([]byte, tornSectorBytes)
	minRun := min(int64(recordHeaderBytes), end-start)
	for sector := start - start%tornSectorBytes; sector < end; sector += tornSectorBytes {
		lo, hi := max(sector, start), min(sector+tornSectorBytes, end)
		if hi-lo < minRun {
			continue
		}
		part := buf[:hi-lo]
		if _, err := seg.f.ReadAt(part, lo); err != nil {
			return false, err
		}
		if allZero(part) {
			return true, nil
		}
	}
	return false, nil
}

// allZero says whether every byte of b is zero.
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
