package raft

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft/internal/fsutil"
)

const (
	fileSnapshotSubdir   = "snapshots"
	fileSnapshotData     = "state.bin"
	fileSnapshotMetaName = "meta.json"
	// A snapshot is written under "<ID>.tmp" and renamed to its ID when complete; an old one
	// is renamed to "<ID>.del" before it is deleted, so a snapshot directory is either whole
	// or gone.
	fileSnapshotTmpSuffix = ".tmp"
	fileSnapshotDelSuffix = ".del"
	// fileSnapshotMaxMeta bounds what is read of a meta.json: it holds a few numbers and the
	// configuration, far below this even for thousands of servers.
	fileSnapshotMaxMeta = 16 << 20
	// fileSnapshotBuffer is the write and read buffer around the data file.
	fileSnapshotBuffer = 256 << 10
)

// FileSnapshotStore is a SnapshotStore that keeps snapshots as directories on disk. It is safe
// for concurrent use; one directory must be used by one store at a time.
//
// Layout: under dir/snapshots, one directory per snapshot, named by its ID
// "<term>-<index>-<created, Unix nanoseconds>", holding
//   - state.bin: the data, as written to the sink;
//   - meta.json: one JSON object with the SnapshotMeta fields (Version, ID, Index, Term,
//     Configuration, ConfigurationIndex, Size) and "CRC32C", the CRC-32 with the Castagnoli
//     polynomial of state.bin.
//
// A snapshot is written in the directory "<ID>.tmp"; Close syncs both files and the directory,
// renames it to its ID and syncs the parent, so a crash leaves either the whole snapshot or a
// temporary directory, which List ignores and the next NewFileSnapshotStore or Create deletes.
// After each new snapshot the store keeps the newest retain and deletes the others.
//
// Corruption: Open checks meta.json and the data size at once and the CRC while the data is
// read; each failure returns an error wrapping ErrSnapshotCorrupt, from the reader's final Read
// in the CRC's case. List skips (and logs) a snapshot whose meta.json is unreadable, since it
// cannot tell its index; it still lists one whose data is corrupt, since it does not read the
// data.
type FileSnapshotStore struct {
	dir    string // dir/snapshots
	retain int
	logger hclog.Logger

	mu      sync.Mutex
	lastSeq int64               // creation stamp of the last Create: IDs stay unique and increasing
	writing map[string]struct{} // temporary directory names of open sinks
}

// fileSnapshotMeta is the content of meta.json.
type fileSnapshotMeta struct {
	SnapshotMeta
	CRC32C uint32
}

// NewFileSnapshotStore opens (creating if needed) the store under dir/snapshots, keeping the
// newest retain snapshots, and deletes what a crash left behind. A nil logger logs nothing.
func NewFileSnapshotStore(dir string, retain int, logger hclog.Logger) (*FileSnapshotStore, error) {
	if retain < 1 {
		return nil, fmt.Errorf("raft: file snapshot store: retain must be at least 1, got %d", retain)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &FileSnapshotStore{
		dir:     filepath.Join(dir, fileSnapshotSubdir),
		retain:  retain,
		logger:  logger.Named("snapshot"),
		writing: make(map[string]struct{}),
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("raft: file snapshot store: %w", err)
	}
	if err := s.removeLeftovers(); err != nil {
		return nil, err
	}
	return s, nil
}

// Create implements SnapshotStore. The sink is for one goroutine; its Close makes the snapshot
// durable and visible.
func (s *FileSnapshotStore) Create(version int, index, term uint64, configuration Configuration, configurationIndex uint64) (SnapshotSink, error) {
	if err := checkSnapshotVersion(version); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.lastSeq = max(time.Now().UnixNano(), s.lastSeq+1)
	key := snapshotKey{term: term, index: index, seq: uint64(s.lastSeq)}
	tmpName := key.id() + fileSnapshotTmpSuffix
	s.writing[tmpName] = struct{}{} // before the directory exists: see removeLeftovers
	s.mu.Unlock()

	if err := s.removeLeftovers(); err != nil {
		s.doneWriting(tmpName)
		return nil, err
	}
	sink := &fileSnapshotSink{
		store:   s,
		tmpName: tmpName,
		meta:    key.meta(version, configuration, configurationIndex),
		crc:     crc32.New(crc32.MakeTable(crc32.Castagnoli)),
	}
	if err := sink.open(); err != nil {
		sink.abandon()
		return nil, err
	}
	return sink, nil
}

// List implements SnapshotStore: the snapshots with a readable meta.json, newest first.
func (s *FileSnapshotStore) List() ([]*SnapshotMeta, error) {
	keys, err := s.keys()
	if err != nil {
		return nil, err
	}
	metas := make([]*SnapshotMeta, 0, len(keys))
	for _, k := range keys {
		m, err := s.readMeta(k)
		switch {
		case errors.Is(err, ErrSnapshotNotFound):
			// Deleted since keys read the directory.
		case err != nil:
			s.logger.Warn("skipping snapshot with unreadable metadata", "term", k.term, "index", k.index, "error", err)
		default:
			metas = append(metas, &m.SnapshotMeta)
		}
	}
	return metas, nil
}

// Open implements SnapshotStore. The reader returns an error wrapping ErrSnapshotCorrupt
// instead of io.EOF when the data does not match its CRC. An unknown ID returns an error
// wrapping ErrSnapshotNotFound.
func (s *FileSnapshotStore) Open(id string) (*SnapshotMeta, io.ReadCloser, error) {
	key, ok := parseSnapshotID(id)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q is not a snapshot ID", ErrSnapshotNotFound, id)
	}
	m, err := s.readMeta(key)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, id, fileSnapshotData))
	if err != nil {
		return nil, nil, s.missing(key, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != m.Size {
		err = fmt.Errorf("%w: snapshot %s: data is %d bytes, want %d", ErrSnapshotCorrupt, id, fi.Size(), m.Size)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	r := &fileSnapshotReader{
		id:        id,
		f:         f,
		buf:       bufio.NewReaderSize(f, fileSnapshotBuffer),
		crc:       crc32.New(crc32.MakeTable(crc32.Castagnoli)),
		remaining: m.Size,
		want:      m.CRC32C,
	}
	return &m.SnapshotMeta, r, nil
}

// keys returns the keys of the complete snapshot directories, newest first.
func (s *FileSnapshotStore) keys() ([]snapshotKey, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("raft: file snapshot store: %w", err)
	}
	var keys []snapshotKey
	for _, e := range entries {
		if k, ok := parseSnapshotID(e.Name()); ok && e.IsDir() {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareSnapshotKeys)
	return keys, nil
}

// readMeta reads and checks the meta.json of the snapshot key.
func (s *FileSnapshotStore) readMeta(key snapshotKey) (*fileSnapshotMeta, error) {
	id := key.id()
	f, err := os.Open(filepath.Join(s.dir, id, fileSnapshotMetaName))
	if err != nil {
		return nil, s.missing(key, err)
	}
	defer f.Close()
	var m fileSnapshotMeta
	dec := json.NewDecoder(io.LimitReader(f, fileSnapshotMaxMeta))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: snapshot %s: %s: %v", ErrSnapshotCorrupt, id, fileSnapshotMetaName, err)
	}
	if m.ID != id || m.Term != key.term || m.Index != key.index || m.Size < 0 {
		return nil, fmt.Errorf("%w: snapshot %s: %s describes snapshot %s (term %d, index %d, size %d)",
			ErrSnapshotCorrupt, id, fileSnapshotMetaName, m.ID, m.Term, m.Index, m.Size)
	}
	if err := checkSnapshotVersion(m.Version); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	return &m, nil
}

// missing explains a file of snapshot key that could not be opened: the snapshot is gone
// (deleted as an old one) or, if its directory is still there, damaged.
func (s *FileSnapshotStore) missing(key snapshotKey, err error) error {
	if _, statErr := os.Stat(filepath.Join(s.dir, key.id())); errors.Is(statErr, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrSnapshotNotFound, key.id())
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: snapshot %s: %w", ErrSnapshotCorrupt, key.id(), err)
	}
	return fmt.Errorf("raft: file snapshot store: %w", err)
}

// removeLeftovers deletes the temporary directories of snapshots that were never finished
// (except those of open sinks) and the directories of old snapshots whose deletion a crash
// interrupted.
func (s *FileSnapshotStore) removeLeftovers() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("raft: file snapshot store: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, fileSnapshotTmpSuffix) && !strings.HasSuffix(name, fileSnapshotDelSuffix) {
			continue
		}
		// A sink registers its name before it creates the directory, so a temporary
		// directory found here without a registration was left by a crash.
		s.mu.Lock()
		_, open := s.writing[name]
		s.mu.Unlock()
		if open {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil {
			return fmt.Errorf("raft: file snapshot store: removing leftover: %w", err)
		}
	}
	return nil
}

// reap deletes all but the newest retain snapshots. A failure is logged: the new snapshot is
// safe, and the next reap tries again.
func (s *FileSnapshotStore) reap() {
	keys, err := s.keys()
	if err != nil {
		s.logger.Warn("failed to list snapshots to delete old ones", "error", err)
		return
	}
	for _, k := range keys[min(s.retain, len(keys)):] {
		final := filepath.Join(s.dir, k.id())
		doomed := final + fileSnapshotDelSuffix
		err := os.Rename(final, doomed)
		if errors.Is(err, fs.ErrNotExist) {
			continue // another reap was first
		}
		if err == nil {
			err = os.RemoveAll(doomed)
		}
		if err != nil {
			s.logger.Warn("failed to delete old snapshot", "term", k.term, "index", k.index, "error", err)
		}
	}
}

func (s *FileSnapshotStore) doneWriting(tmpName string) {
	s.mu.Lock()
	delete(s.writing, tmpName)
	s.mu.Unlock()
}

// fileSnapshotSink writes one snapshot of a FileSnapshotStore. It is used by one goroutine.
type fileSnapshotSink struct {
	store   *FileSnapshotStore
	tmpName string
	meta    SnapshotMeta
	file    *os.File // nil once closed
	buf     *bufio.Writer
	crc     hash.Hash32
	done    bool // Close or Cancel was called
}

// ID implements SnapshotSink.
func (k *fileSnapshotSink) ID() string { return k.meta.ID }

// open creates the temporary directory and the data file.
func (k *fileSnapshotSink) open() error {
	tmp := filepath.Join(k.store.dir, k.tmpName)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("raft: file snapshot store: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(tmp, fileSnapshotData), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("raft: file snapshot store: %w", err)
	}
	k.file = f
	k.buf = bufio.NewWriterSize(f, fileSnapshotBuffer)
	return nil
}

// Write implements SnapshotSink.
func (k *fileSnapshotSink) Write(p []byte) (int, error) {
	if k.done {
		return 0, errSnapshotSinkClosed
	}
	n, err := k.buf.Write(p)
	k.crc.Write(p[:n])
	k.meta.Size += int64(n)
	if err != nil {
		return n, fmt.Errorf("raft: file snapshot store: %w", err)
	}
	return n, nil
}

// Close implements SnapshotSink: it makes the snapshot durable and visible, then deletes
// snapshots beyond the store's retain count. On failure nothing of the snapshot remains.
func (k *fileSnapshotSink) Close() error {
	if k.done {
		return errSnapshotSinkClosed
	}
	k.done = true
	if err := k.commit(); err != nil {
		k.store.logger.Error("failed to persist snapshot", "term", k.meta.Term, "index", k.meta.Index, "error", err)
		k.abandon()
		return fmt.Errorf("raft: file snapshot store: %w", err)
	}
	k.store.doneWriting(k.tmpName)
	k.store.reap()
	return nil
}

// Cancel implements SnapshotSink: it removes what was written. Cancel after Close or Cancel
// returns an error and does nothing.
func (k *fileSnapshotSink) Cancel() error {
	if k.done {
		return errSnapshotSinkClosed
	}
	k.done = true
	return k.abandon()
}

// abandon closes the data file and removes the temporary directory.
func (k *fileSnapshotSink) abandon() error {
	if k.file != nil {
		k.file.Close()
		k.file = nil
	}
	err := os.RemoveAll(filepath.Join(k.store.dir, k.tmpName))
	k.store.doneWriting(k.tmpName)
	if err != nil {
		return fmt.Errorf("raft: file snapshot store: %w", err)
	}
	return nil
}

// commit syncs the data, writes meta.json, syncs the directory, renames it to the ID and
// syncs the parent.
func (k *fileSnapshotSink) commit() error {
	f := k.file
	k.file = nil
	err := k.buf.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	tmp := filepath.Join(k.store.dir, k.tmpName)
	meta, err := json.Marshal(fileSnapshotMeta{SnapshotMeta: k.meta, CRC32C: k.crc.Sum32()})
	if err != nil {
		return err
	}
	if err := writeFileSynced(filepath.Join(tmp, fileSnapshotMetaName), meta); err != nil {
		return err
	}
	if err := fsutil.SyncDir(tmp); err != nil {
		return err
	}
	final := filepath.Join(k.store.dir, k.meta.ID)
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if err := fsutil.SyncDir(k.store.dir); err != nil {
		// Not known to be durable: take it back rather than report a failure and leave it.
		os.RemoveAll(final)
		return err
	}
	return nil
}

// writeFileSynced creates path with data and syncs it.
func writeFileSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fileSnapshotReader reads the data of an opened snapshot and checks its CRC at the end.
type fileSnapshotReader struct {
	id        string
	f         *os.File
	buf       *bufio.Reader
	crc       hash.Hash32
	remaining int64
	want      uint32
	err       error // sticky: the error every later Read returns
}

// Read implements io.Reader. Where a valid snapshot returns io.EOF, a corrupt one returns an
// error wrapping ErrSnapshotCorrupt.
func (r *fileSnapshotReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.remaining == 0 {
		r.err = io.EOF
		if got := r.crc.Sum32(); got != r.want {
			r.err = fmt.Errorf("%w: snapshot %s: data CRC32C %08x, want %08x", ErrSnapshotCorrupt, r.id, got, r.want)
		}
		return 0, r.err
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	n, err := r.buf.Read(p)
	r.crc.Write(p[:n])
	r.remaining -= int64(n)
	if err == io.EOF && r.remaining > 0 {
		err = fmt.Errorf("%w: snapshot %s: data ends %d bytes short", ErrSnapshotCorrupt, r.id, r.remaining)
	}
	if err == io.EOF {
		err = nil // the CRC check on the next Read decides between io.EOF and corruption
	}
	r.err = err
	return n, err
}

// Close implements io.Closer.
func (r *fileSnapshotReader) Close() error {
	if r.err == nil {
		r.err = os.ErrClosed
	}
	return r.f.Close()
}
