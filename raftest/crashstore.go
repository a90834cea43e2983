package raftest

import (
	"io"
	"math/rand"

	"github.com/raftkit/raft"
)

// LogStore wraps inner, the node's durable log (its "disk"), for this incarnation; see
// Incarnation for what a crash leaves in it.
func (inc *Incarnation) LogStore(inner raft.LogStore) raft.LogStore {
	return &crashLogStore{inc: inc, inner: inner}
}

// StableStore wraps inner, the node's durable term and vote, for this incarnation; see
// Incarnation.
func (inc *Incarnation) StableStore(inner raft.StableStore) raft.StableStore {
	return &crashStableStore{inc: inc, inner: inner}
}

// SnapshotStore wraps inner, the node's durable snapshots, for this incarnation; see
// Incarnation.
func (inc *Incarnation) SnapshotStore(inner raft.SnapshotStore) raft.SnapshotStore {
	return &crashSnapshotStore{inc: inc, inner: inner}
}

type crashLogStore struct {
	inc   *Incarnation
	inner raft.LogStore
}

func (s *crashLogStore) FirstIndex() (i uint64, err error) {
	err = s.inc.read(func() error { i, err = s.inner.FirstIndex(); return err })
	return i, err
}

func (s *crashLogStore) LastIndex() (i uint64, err error) {
	err = s.inc.read(func() error { i, err = s.inner.LastIndex(); return err })
	return i, err
}

func (s *crashLogStore) GetLog(index uint64, l *raft.Log) error {
	return s.inc.read(func() error { return s.inner.GetLog(index, l) })
}

func (s *crashLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs is durable once it returned; a crash during it keeps a seeded prefix of logs.
func (s *crashLogStore) StoreLogs(logs []*raft.Log) error {
	settle := func(rng *rand.Rand) {
		if k := rng.Intn(len(logs) + 1); k > 0 {
			_ = s.inner.StoreLogs(logs[:k])
		}
	}
	return s.inc.write(CrashInStoreLogs, synced, settle, func() error { return s.inner.StoreLogs(logs) })
}

// DeleteRange is done once it returned; a crash during it leaves the log as before or after.
func (s *crashLogStore) DeleteRange(lo, hi uint64) error {
	settle := func(rng *rand.Rand) {
		if rng.Intn(2) == 0 {
			_ = s.inner.DeleteRange(lo, hi)
		}
	}
	return s.inc.write(CrashInDeleteRange, deletion, settle, func() error { return s.inner.DeleteRange(lo, hi) })
}

type crashStableStore struct {
	inc   *Incarnation
	inner raft.StableStore
}

func (s *crashStableStore) Set(key, val []byte) error {
	settle := func(rng *rand.Rand) {
		if rng.Intn(2) == 0 {
			_ = s.inner.Set(key, val)
		}
	}
	return s.inc.write(CrashInStableSet, synced, settle, func() error { return s.inner.Set(key, val) })
}

func (s *crashStableStore) SetUint64(key []byte, val uint64) error {
	settle := func(rng *rand.Rand) {
		if rng.Intn(2) == 0 {
			_ = s.inner.SetUint64(key, val)
		}
	}
	return s.inc.write(CrashInStableSet, synced, settle, func() error { return s.inner.SetUint64(key, val) })
}

func (s *crashStableStore) Get(key []byte) (v []byte, err error) {
	err = s.inc.read(func() error { v, err = s.inner.Get(key); return err })
	return v, err
}

func (s *crashStableStore) GetUint64(key []byte) (v uint64, err error) {
	err = s.inc.read(func() error { v, err = s.inner.GetUint64(key); return err })
	return v, err
}

type crashSnapshotStore struct {
	inc   *Incarnation
	inner raft.SnapshotStore
}

// Create starts a snapshot that exists only once its sink's Close returned.
func (s *crashSnapshotStore) Create(version int, index, term uint64, configuration raft.Configuration, configurationIndex uint64) (raft.SnapshotSink, error) {
	var sink *crashSink
	err := s.inc.write(0, buffered, func(*rand.Rand) {}, func() error {
		inner, err := s.inner.Create(version, index, term, configuration, configurationIndex)
		if err != nil {
			return err
		}
		sink = &crashSink{inc: s.inc, inner: inner}
		s.inc.pmu.Lock()
		s.inc.sinks[sink] = struct{}{}
		s.inc.pmu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sink, nil
}

func (s *crashSnapshotStore) List() (metas []*raft.SnapshotMeta, err error) {
	err = s.inc.read(func() error { metas, err = s.inner.List(); return err })
	return metas, err
}

// Open returns a reader that fails once the incarnation crashed.
func (s *crashSnapshotStore) Open(id string) (meta *raft.SnapshotMeta, rc io.ReadCloser, err error) {
	err = s.inc.read(func() error { meta, rc, err = s.inner.Open(id); return err })
	if err != nil {
		return nil, nil, err
	}
	return meta, &crashReadCloser{inc: s.inc, ReadCloser: rc}, nil
}

// crashSink is a snapshot being written by an incarnation. Crash cancels it while it is open.
type crashSink struct {
	inc   *Incarnation
	inner raft.SnapshotSink
}

func (k *crashSink) ID() string { return k.inner.ID() }

func (k *crashSink) Write(p []byte) (n int, err error) {
	err = k.inc.write(CrashInSnapshotWrite, buffered, func(*rand.Rand) {}, func() error {
		n, err = k.inner.Write(p)
		return err
	})
	return n, err
}

// Close makes the snapshot exist once it returned; a crash during it leaves the snapshot
// there or not.
func (k *crashSink) Close() error {
	settle := func(rng *rand.Rand) { // run by Crash, with pmu held
		delete(k.inc.sinks, k)
		if rng.Intn(2) == 0 {
			_ = k.inner.Close()
		} else {
			_ = k.inner.Cancel()
		}
	}
	return k.inc.write(CrashInSnapshotClose, synced, settle, func() error {
		k.forget()
		return k.inner.Close()
	})
}

func (k *crashSink) Cancel() error {
	return k.inc.write(0, buffered, func(*rand.Rand) {}, func() error {
		k.forget()
		return k.inner.Cancel()
	})
}

// forget takes the sink off the incarnation's open sinks. Called with inc.mu held shared.
func (k *crashSink) forget() {
	k.inc.pmu.Lock()
	delete(k.inc.sinks, k)
	k.inc.pmu.Unlock()
}

// crashReadCloser is a stream read by an incarnation: reads fail once it crashed.
type crashReadCloser struct {
	inc *Incarnation
	io.ReadCloser
}

func (r *crashReadCloser) Read(p []byte) (int, error) {
	if r.inc.crashed.Load() {
		return 0, ErrCrashed
	}
	return r.ReadCloser.Read(p)
}

// crashReader is crashReadCloser for a plain reader.
type crashReader struct {
	inc *Incarnation
	r   io.Reader
}

func (r *crashReader) Read(p []byte) (int, error) {
	if r.inc.crashed.Load() {
		return 0, ErrCrashed
	}
	return r.r.Read(p)
}
