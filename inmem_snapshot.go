package raft

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// InmemSnapshotStore is a SnapshotStore that keeps the newest snapshot in memory, for tests. It
// is safe for concurrent use. Snapshot IDs are "<term>-<index>-<n>" where n counts the
// store's Create calls, so IDs do not depend on the clock.
type InmemSnapshotStore struct {
	mu     sync.Mutex
	seq    uint64         // Create calls so far
	latest *inmemSnapshot // nil until a sink closes
}

// inmemSnapshot is one stored snapshot. Nothing modifies it once stored.
type inmemSnapshot struct {
	key  snapshotKey
	meta SnapshotMeta
	data []byte
}

// NewInmemSnapshotStore returns an empty store.
func NewInmemSnapshotStore() *InmemSnapshotStore {
	return &InmemSnapshotStore{}
}

// Create implements SnapshotStore. The sink is for one goroutine.
func (s *InmemSnapshotStore) Create(version int, index, term uint64, configuration Configuration, configurationIndex uint64) (SnapshotSink, error) {
	if err := checkSnapshotVersion(version); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.seq++
	key := snapshotKey{term: term, index: index, seq: s.seq}
	s.mu.Unlock()
	return &inmemSnapshotSink{
		store: s,
		snap:  &inmemSnapshot{key: key, meta: key.meta(version, configuration, configurationIndex)},
	}, nil
}

// List implements SnapshotStore: the newest snapshot, if any. The metadata is a copy.
func (s *InmemSnapshotStore) List() ([]*SnapshotMeta, error) {
	s.mu.Lock()
	latest := s.latest
	s.mu.Unlock()
	if latest == nil {
		return []*SnapshotMeta{}, nil
	}
	return []*SnapshotMeta{latest.metaCopy()}, nil
}

// Open implements SnapshotStore. Only the newest snapshot can be opened; any other ID returns
// an error wrapping ErrSnapshotNotFound. The reader stays valid after a newer snapshot
// replaced the one it reads.
func (s *InmemSnapshotStore) Open(id string) (*SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	latest := s.latest
	s.mu.Unlock()
	if latest == nil || latest.meta.ID != id {
		return nil, nil, fmt.Errorf("%w: %s", ErrSnapshotNotFound, id)
	}
	return latest.metaCopy(), io.NopCloser(bytes.NewReader(latest.data)), nil
}

func (m *inmemSnapshot) metaCopy() *SnapshotMeta {
	c := m.meta
	c.Configuration = m.meta.Configuration.Clone()
	return &c
}

// keep stores snap unless a newer snapshot is stored already.
func (s *InmemSnapshotStore) keep(snap *inmemSnapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil || compareSnapshotKeys(snap.key, s.latest.key) < 0 {
		s.latest = snap
	}
}

// inmemSnapshotSink collects a snapshot for an InmemSnapshotStore.
type inmemSnapshotSink struct {
	store *InmemSnapshotStore
	snap  *inmemSnapshot
	buf   bytes.Buffer
	done  bool // Close or Cancel was called
}

// ID implements SnapshotSink.
func (k *inmemSnapshotSink) ID() string { return k.snap.meta.ID }

// Write implements SnapshotSink. It copies p.
func (k *inmemSnapshotSink) Write(p []byte) (int, error) {
	if k.done {
		return 0, errSnapshotSinkClosed
	}
	return k.buf.Write(p)
}

// Close implements SnapshotSink: the snapshot replaces the stored one unless that is newer.
func (k *inmemSnapshotSink) Close() error {
	if k.done {
		return errSnapshotSinkClosed
	}
	k.done = true
	k.snap.data = k.buf.Bytes()
	k.snap.meta.Size = int64(len(k.snap.data))
	k.store.keep(k.snap)
	return nil
}

// Cancel implements SnapshotSink. Cancel after Close or Cancel returns an error and does
// nothing.
func (k *inmemSnapshotSink) Cancel() error {
	if k.done {
		return errSnapshotSinkClosed
	}
	k.done = true
	k.buf = bytes.Buffer{}
	return nil
}

// DiscardSnapshotStore is a SnapshotStore for nodes that do not want snapshots: its sinks
// discard what they are given, List is always empty and Open always fails with an error
// wrapping ErrSnapshotNotFound. It is safe for concurrent use. With it, the log is never
// compacted by a snapshot and a follower that fell behind compaction cannot be caught up.
type DiscardSnapshotStore struct {
	seq atomic.Uint64 // Create calls so far, for unique sink IDs
}

// NewDiscardSnapshotStore returns a store that keeps nothing.
func NewDiscardSnapshotStore() *DiscardSnapshotStore {
	return &DiscardSnapshotStore{}
}

// Create implements SnapshotStore.
func (s *DiscardSnapshotStore) Create(version int, index, term uint64, _ Configuration, _ uint64) (SnapshotSink, error) {
	if err := checkSnapshotVersion(version); err != nil {
		return nil, err
	}
	return &discardSnapshotSink{id: snapshotKey{term: term, index: index, seq: s.seq.Add(1)}.id()}, nil
}

// List implements SnapshotStore: always empty.
func (s *DiscardSnapshotStore) List() ([]*SnapshotMeta, error) {
	return []*SnapshotMeta{}, nil
}

// Open implements SnapshotStore: always ErrSnapshotNotFound.
func (s *DiscardSnapshotStore) Open(id string) (*SnapshotMeta, io.ReadCloser, error) {
	return nil, nil, fmt.Errorf("%w: %s: the discard store keeps no snapshots", ErrSnapshotNotFound, id)
}

// discardSnapshotSink accepts and drops a snapshot.
type discardSnapshotSink struct {
	id   string
	done bool
}

// ID implements SnapshotSink.
func (k *discardSnapshotSink) ID() string { return k.id }

// Write implements SnapshotSink.
func (k *discardSnapshotSink) Write(p []byte) (int, error) {
	if k.done {
		return 0, errSnapshotSinkClosed
	}
	return len(p), nil
}

// Close implements SnapshotSink.
func (k *discardSnapshotSink) Close() error { return k.finish() }

// Cancel implements SnapshotSink.
func (k *discardSnapshotSink) Cancel() error { return k.finish() }

func (k *discardSnapshotSink) finish() error {
	if k.done {
		return errSnapshotSinkClosed
	}
	k.done = true
	return nil
}
