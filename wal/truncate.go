package wal

import (
	"fmt"
	"slices"
)

// DeleteRange implements raft.LogStore: it removes [min, max], which must be a prefix
// (compaction), a suffix (conflict truncation) or the whole log; anything else returns
// ErrUnsupportedRange. Parts of the range outside the log are ignored. It returns once the
// deletion is durable.
//
// A prefix deletion durably moves the first-index marker, then deletes the segment files
// that lie wholly before it. A suffix deletion deletes later segments and truncates the one
// holding the new last entry at the right record, with fsyncs. Deleting the whole log leaves
// it empty, and the next StoreLogs may start at any index.
func (s *Store) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	switch {
	case s.last == 0 || max < s.first || min > s.last:
		return nil
	case min <= s.first && max >= s.last:
		return s.deleteHead(s.last)
	case min <= s.first:
		return s.deleteHead(max)
	case max >= s.last:
		return s.deleteTail(min)
	default:
		return fmt.Errorf("%w: [%d, %d] inside [%d, %d]", ErrUnsupportedRange, min, max, s.first, s.last)
	}
}

// deleteHead removes every entry up to and including upTo (at most the last index). Called
// with writeMu held.
func (s *Store) deleteHead(upTo uint64) error {
	newFirst := upTo + 1
	// The marker goes first: once it is durable, a crash at any later point leaves the
	// old segments hidden, and Open finishes removing them.
	if err := s.writeMarker(newFirst); err != nil {
		return s.fail(fmt.Errorf("wal: write first-index marker: %w", err))
	}
	s.mu.Lock()
	var dropped []*segment
	for len(s.segs) > 0 && s.segs[0].lastIndex() < newFirst {
		dropped = append(dropped, s.segs[0])
		s.segs = s.segs[1:]
	}
	if len(s.segs) == 0 {
		s.first, s.last = 0, 0
	} else {
		s.first = newFirst
	}
	s.mu.Unlock()
	for _, seg := range dropped {
		if err := seg.remove(); err != nil {
			// Not fatal: the marker hides the file; Open removes it, and so does the next
			// StoreLogs if the log is now empty.
			s.logger.Warn("remove compacted segment", "path", seg.path, "error", err)
		}
	}
	return nil
}

// deleteTail removes every entry from `from` on; from is above the first index. Called with
// writeMu held.
func (s *Store) deleteTail(from uint64) error {
	newLast := from - 1
	s.mu.Lock()
	k := len(s.segs) - 1
	for s.segs[k].base > newLast {
		k--
	}
	seg := s.segs[k]
	dropped := slices.Clone(s.segs[k+1:]) // a later append to s.segs reuses the old array
	s.segs = s.segs[:k+1]
	if keep := newLast - seg.base + 1; keep < uint64(len(seg.offsets)) {
		seg.size = seg.offsets[keep]
		seg.offsets = seg.offsets[:keep]
	}
	s.last = newLast
	s.mu.Unlock()
	// Newest file first, each removal durable before the next, so a crash in between leaves
	// a prefix of the old log, never a gap.
	for i := len(dropped) - 1; i >= 0; i-- {
		if err := dropped[i].remove(); err != nil {
			return s.fail(fmt.Errorf("wal: remove %s: %w", dropped[i].path, err))
		}
		if err := s.syncDirUnlessNoSync(); err != nil {
			return s.fail(fmt.Errorf("wal: sync %s: %w", s.dir, err))
		}
	}
	if err := seg.cut(s.opts.noSync); err != nil {
		return s.fail(fmt.Errorf("wal: truncate %s at offset %d: %w", seg.path, seg.size, err))
	}
	return nil
}

// syncDirUnlessNoSync fsyncs the store directory unless fsync is off.
func (s *Store) syncDirUnlessNoSync() error {
	if s.opts.noSync {
		return nil
	}
	return syncDir(s.dir)
}
