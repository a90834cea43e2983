package raft

import (
	"bufio"
	"bytes"
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
	// fileSnapshotLock is the flock target that keeps a second store out of the directory.
	fileSnapshotLock = "LOCK"
	// fileSnapshotFormat is the meta.json format this build writes and the newest it reads:
	// 1 is plain JSON (no checksum of its own; still read), 2 adds "Format" and a CRC32C line
	// after the JSON that covers every byte before it.
	fileSnapshotFormat = 2
)

// castagnoliTable is the CRC32C table of the snapshot files; computed once, only ever read.
var castagnoliTable = crc32.MakeTable(crc32.Castagnoli)

// FileSnapshotStore is a SnapshotStore that keeps snapshots as directories on disk. It is safe
// for concurrent use; one directory must be used by one store at a time.
//
// Layout: under dir/snapshots, the lock file LOCK and one directory per snapshot, named by
// its ID "<term>-<index>-<created, Unix nanoseconds>", holding
//   - state.bin: the data, as written to the sink;
//   - meta.json: one line of JSON with "Format" (2), the SnapshotMeta fields (Version, ID,
//     Index, Term, Configuration, ConfigurationIndex, Size) and "CRC32C", the CRC-32 with the
//     Castagnoli polynomial of state.bin; then a line of 8 hex digits, the CRC32C of every
//     byte before it, so that no bit of the metadata goes unchecked. A meta.json of format 1
//     (plain JSON, written by earlier releases) is still read; a format newer than this build
//     reads makes List and Open fail with ErrUnsupportedSnapshotFormat.
//
// One store per directory: NewFileSnapshotStore takes a flock on LOCK (ErrSnapshotStoreLocked
// if another store, in this process or another, holds it) and Close releases it.
//
// A snapshot is written in the directory "<ID>.tmp"; Close syncs both files and the directory,
// renames it to its ID and syncs the parent, so a crash leaves either the whole snapshot or a
// temporary directory, which List ignores and the next NewFileSnapshotStore or Create deletes.
// After each new snapshot the store keeps the newest retain and deletes the others.
//
// Corruption: Open checks meta.json and the data size at once and the CRC while the data is
// read; each failure returns an error wrapping ErrSnapshotCorrupt, from the reader's final Read
// in the CRC's case. List skips (and logs) a snapshot whose meta.json does not verify, and
// DamagedSnapshotIndexes reports it (by the index in its directory name) so that start-up
// knows how far the node's state reached; List still lists one whose data is corrupt, since
// it does not read the data. Retention counts only snapshots whose metadata verifies.
type FileSnapshotStore struct {
	dir    string // dir/snapshots
	retain int
	logger hclog.Logger

	mu      sync.Mutex
	lastSeq int64               // creation stamp of the last Create: IDs stay unique and increasing
	writing map[string]struct{} // temporary directory names of open sinks
	lock    *os.File            // holds the directory flock; nil after Close
}

// fileSnapshotMeta is the JSON part of meta.json.
type fileSnapshotMeta struct {
	Format int `json:",omitempty"` // absent in format 1
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
	if err := fsutil.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("raft: file snapshot store: %w", err)
	}
	lock, err := fsutil.LockFile(filepath.Join(s.dir, fileSnapshotLock))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrSnapshotStoreLocked, s.dir)
	}
	if err != nil {
		return nil, fmt.Errorf("raft: file snapshot store: locking %s: %w", s.dir, err)
	}
	s.lock = lock
	if err := s.removeLeftovers(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the directory lock. A snapshot sink still open may finish, but the store must
// not be used for new snapshots afterwards. A second Close does nothing.
func (s *FileSnapshotStore) Close() error {
	s.mu.Lock()
	lock := s.lock
	s.lock = nil
	s.mu.Unlock()
	if lock == nil {
		return nil
	}
	return lock.Close()
}

// DamagedSnapshotIndexes implements DamagedSnapshotReporter: the index, read from the
// directory name, of every snapshot whose meta.json does not verify.
func (s *FileSnapshotStore) DamagedSnapshotIndexes() ([]uint64, error) {
	keys, err := s.keys()
	if err != nil {
		return nil, err
	}
	var damaged []uint64
	for _, k := range keys {
		if _, err := s.readMeta(k); errors.Is(err, ErrSnapshotCorrupt) {
			damaged = append(damaged, k.index)
		}
	}
	return damaged, nil
}

// Create implements SnapshotStore. The sink is for one goroutine; its Close makes the snapshot
// durable and visible.
func (s *FileSnapshotStore) Create(version int, index, term uint64, configuration Configuration, configurationIndex uint64) (SnapshotSink, error) {
	if err := checkSnapshotVersion(version); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.lock == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("raft: file snapshot store: %w", os.ErrClosed)
	}
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
		crc:     crc32.New(castagnoliTable),
	}
	if err := sink.open(); err != nil {
		sink.abandon()
		return nil, err
	}
	return sink, nil
}

// List implements SnapshotStore: the snapshots whose meta.json verifies, newest first. A
// snapshot written in a newer format than this build reads makes List fail with
// ErrUnsupportedSnapshotFormat: a node must not start below state it cannot read.
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
		case errors.Is(err, ErrUnsupportedSnapshotFormat):
			return nil, err
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
		crc:       crc32.New(castagnoliTable),
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
	raw, err := io.ReadAll(io.LimitReader(f, fileSnapshotMaxMeta))
	if err != nil {
		return nil, fmt.Errorf("raft: file snapshot store: snapshot %s: %w", id, err)
	}
	m, err := decodeSnapshotMeta(raw)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %s: %w", id, fileSnapshotMetaName, err)
	}
	if m.ID != id || m.Term != key.term || m.Index != key.index || m.Size < 0 {
		return nil, fmt.Errorf("%w: snapshot %s: %s describes snapshot %s (term %d, index %d, size %d)",
			ErrSnapshotCorrupt, id, fileSnapshotMetaName, m.ID, m.Term, m.Index, m.Size)
	}
	if err := checkSnapshotVersion(m.Version); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	return m, nil
}

// encodeSnapshotMeta returns the content of meta.json (format 2): the JSON line, then the
// CRC32C of it in 8 hex digits and a newline.
func encodeSnapshotMeta(m fileSnapshotMeta) ([]byte, error) {
	m.Format = fileSnapshotFormat
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return appendMetaChecksum(append(b, '\n')), nil
}

// appendMetaChecksum appends the checksum line of meta.json: the CRC32C of every byte of b in
// 8 hex digits, and a newline.
func appendMetaChecksum(b []byte) []byte {
	return fmt.Appendf(b, "%08x\n", crc32.Checksum(b, castagnoliTable))
}

// metaCRCLineBytes is the length of the checksum line that ends a format-2 meta.json.
const metaCRCLineBytes = 9

// decodeSnapshotMeta checks and decodes a meta.json of format 1 or 2.
func decodeSnapshotMeta(raw []byte) (*fileSnapshotMeta, error) {
	body, sum, signed := splitMetaChecksum(raw)
	if signed {
		var want uint32
		if _, err := fmt.Sscanf(string(sum), "%08x", &want); err != nil {
			return nil, fmt.Errorf("%w: unreadable checksum line: %v", ErrSnapshotCorrupt, err)
		}
		if got := crc32.Checksum(body, castagnoliTable); got != want {
			return nil, fmt.Errorf("%w: metadata CRC32C %08x, computed %08x", ErrSnapshotCorrupt, want, got)
		}
	}
	var m fileSnapshotMeta
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.TrimSpace(rest)) > 0 || dec.More() {
		return nil, fmt.Errorf("%w: data after the metadata", ErrSnapshotCorrupt)
	}
	switch {
	case m.Format > fileSnapshotFormat:
		return nil, fmt.Errorf("%w: format %d, this build reads up to %d", ErrUnsupportedSnapshotFormat, m.Format, fileSnapshotFormat)
	case signed != (m.Format >= 2):
		return nil, fmt.Errorf("%w: format %d with checksum line %v", ErrSnapshotCorrupt, m.Format, signed)
	}
	return &m, nil
}

// splitMetaChecksum splits a format-2 meta.json into the signed bytes and the checksum's hex
// digits. signed is false when the content does not end in a checksum line (format 1).
func splitMetaChecksum(raw []byte) (body, sum []byte, signed bool) {
	n := len(raw)
	if n <= metaCRCLineBytes || raw[n-1] != '\n' || raw[n-metaCRCLineBytes-1] != '\n' {
		return raw, nil, false
	}
	sum = raw[n-metaCRCLineBytes : n-1]
	for _, c := range sum {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return raw, nil, false
		}
	}
	return raw[:n-metaCRCLineBytes], sum, true
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

// reap deletes every snapshot older than the newest retain usable ones (whose meta.json
// verifies). A snapshot with damaged metadata never counts toward retain: with retain 2 and
// snapshots 10, 20 (damaged) and 30, 10 and 30 stay. Damaged ones newer than the oldest kept
// usable snapshot stay too, for inspection. A failure is logged: the new snapshot is safe, and
// the next reap tries again.
func (s *FileSnapshotStore) reap() {
	keys, err := s.keys()
	if err != nil {
		s.logger.Warn("failed to list snapshots to delete old ones", "error", err)
		return
	}
	usable, cut := 0, len(keys)
	for i, k := range keys {
		if usable == s.retain {
			cut = i
			break
		}
		if _, err := s.readMeta(k); err == nil {
			usable++
		}
	}
	for _, k := range keys[cut:] {
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
	meta, err := encodeSnapshotMeta(fileSnapshotMeta{SnapshotMeta: k.meta, CRC32C: k.crc.Sum32()})
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
