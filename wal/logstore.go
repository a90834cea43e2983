package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/raftkit/raft"
)

// getLogAttempts bounds how often GetLog retries a read that raced with a truncation,
// compaction or Close moving the record under it. Each retry needs the writer to have moved
// that record again in the meantime, so a few are plenty; the bound makes a record that is
// really corrupt fail fast.
const getLogAttempts = 8

// FirstIndex implements raft.LogStore: the first index held, or 0 for an empty log.
func (s *Store) FirstIndex() (uint64, error) {
	first, _, err := s.bounds()
	return first, err
}

// LastIndex implements raft.LogStore: the last index held, or 0 for an empty log.
func (s *Store) LastIndex() (uint64, error) {
	_, last, err := s.bounds()
	return last, err
}

// bounds returns the first and last index under the read lock.
func (s *Store) bounds() (first, last uint64, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return 0, 0, ErrClosed
	}
	return s.first, s.last, nil
}

// recordLoc says where a record lives on disk.
type recordLoc struct {
	f          *os.File
	path       string
	start, end int64
}

// GetLog implements raft.LogStore. It serves recent entries from memory and reads others with
// one positioned read, verifying the record's CRC and index. The Log's Data and Extensions are
// freshly allocated and belong to the caller. An index outside [FirstIndex, LastIndex] returns
// an error wrapping raft.ErrLogNotFound; a record that fails verification, one wrapping
// ErrCorrupt. GetLog never waits for an append or fsync in progress.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	var err error
	for attempt := 0; attempt < getLogAttempts; attempt++ {
		loc, cached, hit, lerr := s.locate(index)
		if lerr != nil {
			return lerr
		}
		if hit {
			cached.fill(l) // the cached bytes are immutable, so copy them outside the lock
			return nil
		}
		if err = readRecord(loc, index, l); err == nil {
			return nil
		}
		// The record may have been truncated or compacted away (or its file closed) after
		// locate released the lock; locate on the next attempt tells.
	}
	if errors.Is(err, ErrCorrupt) && !s.closed.Load() {
		s.markCorrupt(err)
	}
	return err
}

// markCorrupt makes the store refuse every later write, log and stable alike: a store that
// has lost an entry it acknowledged must not go on acknowledging (or voting) as if healthy.
func (s *Store) markCorrupt(err error) {
	if s.corrupt.CompareAndSwap(nil, &err) {
		s.logger.Error("log record failed verification, refusing further writes", "error", err)
	}
}

// locate finds index under the read lock: either the cached entry (hit), or where the record
// is on disk.
func (s *Store) locate(index uint64) (recordLoc, cachedEntry, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return recordLoc{}, cachedEntry{}, false, ErrClosed
	}
	if s.last == 0 || index < s.first || index > s.last {
		return recordLoc{}, cachedEntry{}, false,
			fmt.Errorf("%w: index %d outside [%d, %d]", raft.ErrLogNotFound, index, s.first, s.last)
	}
	if e, ok := s.cache.get(index); ok {
		return recordLoc{}, e, true, nil
	}
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].base > index }) - 1
	seg := s.segs[i]
	start, end := seg.recordSpan(index)
	return recordLoc{f: seg.f, path: seg.path, start: start, end: end}, cachedEntry{}, false, nil
}

// readRecord reads and verifies the record at loc into l.
func readRecord(loc recordLoc, index uint64, l *raft.Log) error {
	buf := make([]byte, loc.end-loc.start)
	if _, err := loc.f.ReadAt(buf, loc.start); err != nil {
		return fmt.Errorf("wal: read %s at offset %d: %w", loc.path, loc.start, err)
	}
	n, err := decodeRecord(buf, l)
	if err == nil && (n != len(buf) || l.Index != index) {
		err = fmt.Errorf("record of %d bytes with index %d, expected %d bytes with index %d", n, l.Index, len(buf), index)
	}
	if err != nil {
		*l = raft.Log{}
		return fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, loc.path, loc.start, err)
	}
	return nil
}

// StoreLog implements raft.LogStore; see StoreLogs.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore. The batch must continue the log with consecutive
// indexes (any first index on an empty log); otherwise it returns ErrOutOfOrder and writes
// nothing. The whole batch goes to the active segment with one write and one fsync (group
// commit); StoreLogs returns once it is durable. The Logs are not retained.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.checkBatch(logs); err != nil {
		return err
	}
	if s.last == 0 {
		// Every segment file left on disk is dead, but one whose removal failed would be
		// read back at Open: break the continuity check, or, once the marker is lowered
		// below it, come back as entries after the new ones.
		if err := s.removeLeftoverSegments(); err != nil {
			return s.fail(err)
		}
	}
	if s.last == 0 && s.marker > logs[0].Index {
		// The log was emptied with the marker past the new start: lower it first, or a
		// reopen would hide the new entries.
		if err := s.writeMarker(logs[0].Index); err != nil {
			return s.fail(fmt.Errorf("wal: write first-index marker: %w", err))
		}
	}
	return s.appendBatch(logs)
}

// writable returns why the store refuses writes, if it does. Called with writeMu held.
func (s *Store) writable() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.failed != nil {
		return fmt.Errorf("%w: %w", ErrFailed, s.failed)
	}
	return s.corruptErr()
}

// corruptErr returns ErrFailed wrapping the corruption GetLog found, if it found any.
func (s *Store) corruptErr() error {
	if p := s.corrupt.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *p)
	}
	return nil
}

// fail makes err sticky: every later write returns ErrFailed wrapping it.
func (s *Store) fail(err error) error {
	s.logger.Error("log store write failed, refusing further writes", "error", err)
	s.failed = err
	return err
}

// checkBatch validates indexes and sizes before anything is written.
func (s *Store) checkBatch(logs []*raft.Log) error {
	for i, l := range logs {
		switch {
		case l == nil:
			return fmt.Errorf("%w: nil log at position %d", ErrOutOfOrder, i)
		case l.Index == 0:
			return fmt.Errorf("%w: index 0 at position %d", ErrOutOfOrder, i)
		case i == 0 && s.last != 0 && l.Index != s.last+1:
			return fmt.Errorf("%w: batch starts at %d, log ends at %d", ErrOutOfOrder, l.Index, s.last)
		case i > 0 && l.Index != logs[i-1].Index+1:
			return fmt.Errorf("%w: index %d follows %d", ErrOutOfOrder, l.Index, logs[i-1].Index)
		case len(l.Data)+len(l.Extensions) > MaxEntryBytes:
			return fmt.Errorf("%w: index %d has %d bytes, limit %d", ErrTooLarge, l.Index, len(l.Data)+len(l.Extensions), MaxEntryBytes)
		}
	}
	return nil
}

// removeLeftoverSegments deletes, durably, every segment file in the directory. Called with
// writeMu held when the log is empty, so none of them holds a live entry.
func (s *Store) removeLeftoverSegments() error {
	bases, err := listSegments(s.dir)
	if err != nil {
		return fmt.Errorf("wal: list %s: %w", s.dir, err)
	}
	if len(bases) == 0 {
		return nil
	}
	for _, base := range bases {
		path := filepath.Join(s.dir, segmentName(base))
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("wal: remove leftover segment %s: %w", path, err)
		}
	}
	if err := s.syncDirUnlessNoSync(); err != nil {
		return fmt.Errorf("wal: sync %s: %w", s.dir, err)
	}
	return nil
}
