package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/internal/fsutil"
)

// Compile-time checks that Store satisfies the contracts.
var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// markerFileName holds the durable first-index marker; markerMagic opens its payload.
const (
	markerFileName = "FIRST"
	markerMagic    = "RKWALFST"
)

// Store is a durable raft.LogStore and raft.StableStore backed by segment files in one
// directory. It is safe for concurrent use: appends and truncations are serialized, reads run
// concurrently with them and with each other. Open it with Open and release it with Close.
type Store struct {
	dir    string
	opts   options
	logger hclog.Logger
	lock   *os.File // holds the directory flock until Close
	report OpenReport
	closed atomic.Bool // set once by Close, under every lock below
	// corrupt holds the first ErrCorrupt GetLog returned; once set, every write is refused.
	corrupt atomic.Pointer[error]

	// writeMu serializes StoreLogs, DeleteRange and Close. It is held across their file I/O
	// on purpose: the log has one writer at a time. Readers never take it.
	writeMu sync.Mutex
	failed  error  // the I/O error that stopped writes, if any
	marker  uint64 // value of the durable first-index marker
	buf     []byte // encode buffer, reused unless the cache kept the previous one

	// mu guards the index: which segments exist, their record offsets, the bounds and the
	// cache. Writers hold it only to publish a change, never across I/O.
	mu    sync.RWMutex
	segs  []*segment // in index order; the last one is the active segment
	first uint64     // 0 when the log is empty
	last  uint64     // 0 when the log is empty
	cache recentCache

	// stableWriteMu serializes Set and SetUint64 across their atomic file replace.
	stableWriteMu sync.Mutex
	// kvMu guards kv, which only ever holds values already durable in the stable file.
	kvMu sync.RWMutex
	kv   map[string][]byte
}

// OpenReport says what Open found and what it repaired. Nothing is ever dropped without
// being listed here and logged at Warn.
type OpenReport struct {
	// FirstIndex and LastIndex are the log bounds after recovery (0 and 0 when empty).
	FirstIndex, LastIndex uint64
	// Segments is the number of segment files kept.
	Segments int
	// TailCut is true when the last segment ended in the torn tail of an interrupted write
	// and was cut at the end of its last good record (see the package doc for the rule).
	TailCut bool
	// CutFile, CutOffset and CutBytes say which file was cut, at which offset, and how many
	// bytes were dropped; CutReason says what was wrong at CutOffset.
	CutFile   string
	CutOffset int64
	CutBytes  int64
	CutReason string
	// RemovedFiles lists files Open deleted: leftover temp files, segments wholly below the
	// first-index marker (left by an interrupted compaction), and a last segment left with no
	// valid record.
	RemovedFiles []string
}

// Open opens the store in dir, creating the directory if needed, takes its lock (ErrLocked if
// another Store holds it), verifies every record of every segment, and cuts the torn tail of
// an interrupted write off the last segment (see OpenReport). Any other damage returns an
// error wrapping ErrCorrupt that names the file and offset, and leaves the files as they are.
func Open(dir string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := fsutil.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, opts: o, logger: o.logger, lock: lock, cache: newRecentCache(o.cacheEntries)}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.report.FirstIndex, s.report.LastIndex, s.report.Segments = s.first, s.last, len(s.segs)
	return s, nil
}

// OpenReport returns what Open found and repaired.
func (s *Store) OpenReport() OpenReport {
	r := s.report
	r.RemovedFiles = append([]string(nil), s.report.RemovedFiles...)
	return r
}

// Close releases the files and the directory lock. Calls after Close, including a second
// Close, return ErrClosed. Close waits for a write in progress to finish.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.stableWriteMu.Lock()
	defer s.stableWriteMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	s.closed.Store(true)
	return s.closeFiles()
}

// closeFiles closes every segment and the lock file.
func (s *Store) closeFiles() error {
	var errs []error
	for _, seg := range s.segs {
		errs = append(errs, seg.f.Close())
	}
	errs = append(errs, s.lock.Close())
	return errors.Join(errs...)
}

// recover rebuilds the in-memory state from the directory.
func (s *Store) recover() error {
	if err := s.removeTempFiles(); err != nil {
		return err
	}
	if err := s.loadMarker(); err != nil {
		return err
	}
	if err := s.loadStable(); err != nil {
		return err
	}
	return s.loadSegments()
}

// removeTempFiles deletes files left by an interrupted atomic replace.
func (s *Store) removeTempFiles() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("wal: list %s: %w", s.dir, err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), tempSuffix) {
			continue
		}
		if err := s.removeFile(filepath.Join(s.dir, e.Name()), "interrupted atomic replace"); err != nil {
			return err
		}
	}
	return nil
}

// removeFile deletes a file Open decided to drop, logging and reporting it.
func (s *Store) removeFile(path, reason string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("wal: remove %s: %w", path, err)
	}
	s.logger.Warn("removed file at open", "path", path, "reason", reason)
	s.report.RemovedFiles = append(s.report.RemovedFiles, path)
	return nil
}

// loadMarker reads the first-index marker; a missing marker means 0.
func (s *Store) loadMarker() error {
	payload, ok, err := readSealedFile(s.dir, markerFileName)
	if err != nil || !ok {
		return err
	}
	if len(payload) != len(markerMagic)+8 || string(payload[:len(markerMagic)]) != markerMagic {
		return fmt.Errorf("%w: %s at offset 0: not a first-index marker", ErrCorrupt, filepath.Join(s.dir, markerFileName))
	}
	s.marker = binary.LittleEndian.Uint64(payload[len(markerMagic):])
	return nil
}

// writeMarker durably replaces the first-index marker.
func (s *Store) writeMarker(first uint64) error {
	payload := binary.LittleEndian.AppendUint64([]byte(markerMagic), first)
	if err := writeSealedFile(s.dir, markerFileName, payload, s.opts.noSync); err != nil {
		return err
	}
	s.marker = first
	return nil
}
