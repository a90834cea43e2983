package wal

import (
	"fmt"
	"path/filepath"
)

// loadSegments opens and verifies the segment files, cuts a bad tail off the last one, drops
// what the first-index marker hides, and sets the log bounds.
func (s *Store) loadSegments() error {
	bases, err := listSegments(s.dir)
	if err != nil {
		return fmt.Errorf("wal: list %s: %w", s.dir, err)
	}
	for i, base := range bases {
		// A segment whose successor starts at or below the marker is wholly compacted: an
		// interrupted DeleteRange left it. Drop it unread.
		if i+1 < len(bases) && bases[i+1] <= s.marker {
			if err := s.removeFile(filepath.Join(s.dir, segmentName(base)), "below first-index marker"); err != nil {
				return err
			}
			continue
		}
		if err := s.loadSegment(base, i == len(bases)-1); err != nil {
			return err
		}
	}
	if err := s.dropHiddenSegments(); err != nil {
		return err
	}
	if n := len(s.segs); n > 0 {
		s.first = max(s.marker, s.segs[0].base)
		s.last = s.segs[n-1].lastIndex()
	}
	return nil
}

// loadSegment opens and verifies one segment and appends it to s.segs. Only the last segment
// may be cut; a problem in a sealed one is an error.
func (s *Store) loadSegment(base uint64, isLast bool) error {
	seg, prob, err := openSegment(s.dir, base)
	if err != nil {
		return err
	}
	s.segs = append(s.segs, seg) // from here on closeFiles closes it if Open fails
	if prob != nil && !isLast {
		return fmt.Errorf("%w: sealed segment %s %s", ErrCorrupt, seg.path, prob.Error())
	}
	if prob == nil && !isLast && len(seg.offsets) == 0 {
		return fmt.Errorf("%w: sealed segment %s at offset %d: holds no records", ErrCorrupt, seg.path, seg.size)
	}
	if n := len(s.segs); n > 1 {
		if prev := s.segs[n-2]; prev.lastIndex()+1 != seg.base {
			return fmt.Errorf("%w: segment %s at offset 0: starts at index %d but the previous segment ends at %d",
				ErrCorrupt, seg.path, seg.base, prev.lastIndex())
		}
	}
	if prob == nil {
		return nil
	}
	torn, why, err := s.tailIsTorn(seg, prob)
	if err != nil {
		return err
	}
	if !torn {
		return fmt.Errorf("%w: last segment %s %s; %s (the bytes are kept)", ErrCorrupt, seg.path, prob.Error(), why)
	}
	return s.cutTail(seg, prob)
}

// cutTail truncates the last segment after its last good record, durably, and reports it.
// Called only for a torn tail (see tailIsTorn).
func (s *Store) cutTail(seg *segment, prob *scanProblem) error {
	if prob.fileBytes == seg.size {
		return nil // an empty file: nothing to cut, dropHiddenSegments removes and reports it
	}
	s.report.TailCut = true
	s.report.CutFile = seg.path
	s.report.CutOffset = seg.size
	s.report.CutBytes = prob.fileBytes - seg.size
	s.report.CutReason = prob.Error()
	s.logger.Warn("cut torn log tail", "path", seg.path, "offset", seg.size,
		"bytes", prob.fileBytes-seg.size, "index", seg.lastIndex(), "error", prob.Error())
	if err := seg.cut(s.opts.noSync); err != nil {
		return fmt.Errorf("wal: cut %s at offset %d: %w", seg.path, seg.size, err)
	}
	return nil
}

// dropHiddenSegments removes segments wholly below the first-index marker and a last segment
// left without records, so that every kept segment holds at least one visible record.
func (s *Store) dropHiddenSegments() error {
	for len(s.segs) > 0 && s.segs[0].lastIndex() < s.marker {
		if err := s.dropLoadedSegment(0, "below first-index marker"); err != nil {
			return err
		}
	}
	if n := len(s.segs); n > 0 && len(s.segs[n-1].offsets) == 0 {
		return s.dropLoadedSegment(n-1, "no valid record")
	}
	return nil
}

// dropLoadedSegment closes and removes s.segs[i] during Open.
func (s *Store) dropLoadedSegment(i int, reason string) error {
	seg := s.segs[i]
	s.segs = append(s.segs[:i], s.segs[i+1:]...)
	seg.f.Close()
	return s.removeFile(seg.path, reason)
}
