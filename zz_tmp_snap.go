package raft

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

type InmemSnapshotStore struct {
	mu    sync.Mutex
	metas []*SnapshotMeta
	data  map[string][]byte
	n     int
}

func NewInmemSnapshotStore() *InmemSnapshotStore {
	return &InmemSnapshotStore{data: map[string][]byte{}}
}

type tmpSink struct {
	s    *InmemSnapshotStore
	meta SnapshotMeta
	buf  bytes.Buffer
}

func (t *tmpSink) Write(p []byte) (int, error) { return t.buf.Write(p) }
func (t *tmpSink) ID() string                  { return t.meta.ID }
func (t *tmpSink) Cancel() error               { return nil }
func (t *tmpSink) Close() error {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.meta.Size = int64(t.buf.Len())
	m := t.meta
	t.s.metas = append([]*SnapshotMeta{&m}, t.s.metas...)
	t.s.data[m.ID] = t.buf.Bytes()
	return nil
}
func (s *InmemSnapshotStore) Create(version int, index, term uint64, c Configuration, ci uint64) (SnapshotSink, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return &tmpSink{s: s, meta: SnapshotMeta{Version: version, ID: fmt.Sprintf("%d-%d-%d", term, index, s.n), Index: index, Term: term, Configuration: c, ConfigurationIndex: ci}}, nil
}
func (s *InmemSnapshotStore) List() ([]*SnapshotMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.metas) == 0 {
		return nil, nil
	}
	m := *s.metas[0]
	return []*SnapshotMeta{&m}, nil
}
func (s *InmemSnapshotStore) Open(id string) (*SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.metas {
		if m.ID == id {
			c := *m
			return &c, io.NopCloser(bytes.NewReader(s.data[id])), nil
		}
	}
	return nil, nil, fmt.Errorf("not found")
}
