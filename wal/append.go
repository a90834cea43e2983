package wal

import (
	"fmt"

	"github.com/raftkit/raft"
)

// appendBatch encodes the batch, writes it to the active segment (starting a new one when
// the active one is full) with one write and one fsync, then publishes it. Called with
// writeMu held, after checkBatch.
func (s *Store) appendBatch(logs []*raft.Log) error {
	seg, fresh, err := s.activeSegment(logs[0].Index)
	if err != nil {
		return s.fail(err)
	}
	need := segmentHeaderBytes
	for _, l := range logs {
		need += recordBytes(l)
	}
	if cap(s.buf) < need {
		s.buf = make([]byte, 0, need) // sized once, so encoding never regrows it
	}
	buf := s.buf[:0]
	if fresh {
		buf = appendSegmentHeader(buf, seg.base)
	}
	starts := make([]int64, len(logs))
	for i, l := range logs {
		starts[i] = seg.size + int64(len(buf))
		buf = appendRecord(buf, l)
	}
	if err := s.writeDurably(seg, buf, fresh); err != nil {
		return s.fail(err)
	}
	s.publishAppend(seg, fresh, logs, buf, starts)
	return nil
}

// activeSegment returns the segment the batch starting at index goes to, and whether it is a
// new, still empty file. Called with writeMu held.
func (s *Store) activeSegment(index uint64) (*segment, bool, error) {
	if n := len(s.segs); n > 0 && s.segs[n-1].size < s.opts.segmentBytes {
		return s.segs[n-1], false, nil
	}
	seg, err := createSegment(s.dir, index)
	if err != nil {
		return nil, false, fmt.Errorf("wal: create segment: %w", err)
	}
	return seg, true, nil
}

// writeDurably writes buf at the end of seg and fsyncs it (and the directory, for a new file).
// On failure it tries to take the partial write back, so a reopen does not see it.
func (s *Store) writeDurably(seg *segment, buf []byte, fresh bool) error {
	_, err := seg.f.WriteAt(buf, seg.size)
	if err == nil && !s.opts.noSync {
		err = seg.f.Sync()
	}
	if err == nil && fresh && !s.opts.noSync {
		err = syncDir(s.dir)
	}
	if err == nil {
		return nil
	}
	if fresh {
		_ = seg.remove() // best effort; Open drops a segment without valid records anyway
	} else {
		_ = seg.f.Truncate(seg.size) // best effort; Open cuts a torn tail anyway
	}
	return fmt.Errorf("wal: append to %s at offset %d: %w", seg.path, seg.size, err)
}

// publishAppend makes a written batch visible to readers. Called with writeMu held.
func (s *Store) publishAppend(seg *segment, fresh bool, logs []*raft.Log, buf []byte, starts []int64) {
	cacheIt := s.cache.enabled() && len(buf) <= maxCachedBatchBytes
	s.mu.Lock()
	if fresh {
		s.segs = append(s.segs, seg)
	}
	if cacheIt {
		s.cacheBatch(logs, buf, seg.size, starts)
	} else {
		for _, l := range logs {
			s.cache.forget(l.Index) // may hold an entry a tail truncation removed
		}
	}
	seg.offsets = append(seg.offsets, starts...)
	seg.size += int64(len(buf))
	if s.first == 0 {
		s.first = max(s.marker, logs[0].Index)
	}
	s.last = logs[len(logs)-1].Index
	s.mu.Unlock()
	if cacheIt {
		s.buf = nil // the cache now references buf; the next batch allocates its own
	} else {
		s.buf = buf
	}
}

// cacheBatch puts the entries of a just-written batch into the cache, aliasing buf, whose
// first byte sits at file offset bufStart. Called with mu held for writing.
func (s *Store) cacheBatch(logs []*raft.Log, buf []byte, bufStart int64, starts []int64) {
	for i, l := range logs {
		p := int(starts[i]-bufStart) + recordHeaderBytes
		d := p + len(l.Data)
		e := d + len(l.Extensions)
		s.cache.put(cachedEntry{index: l.Index, term: l.Term, typ: l.Type, data: buf[p:d:d], ext: buf[d:e:e]})
	}
}
