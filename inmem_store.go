package raft

import (
	"fmt"
	"sync"
)

// InmemStore is a LogStore and StableStore that keeps everything in memory. It is safe for
// concurrent use. It loses everything when the process exits, so it is meant for tests and
// for nodes whose durability comes from elsewhere.
type InmemStore struct {
	mu        sync.RWMutex
	firstIdx  uint64
	lastIdx   uint64
	logs      map[uint64]*Log
	kv        map[string][]byte
	kvUint64s map[string]uint64
}

// NewInmemStore returns an empty store.
func NewInmemStore() *InmemStore {
	return &InmemStore{
		logs:      make(map[uint64]*Log),
		kv:        make(map[string][]byte),
		kvUint64s: make(map[string]uint64),
	}
}

// FirstIndex implements LogStore.
func (s *InmemStore) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.firstIdx, nil
}

// LastIndex implements LogStore.
func (s *InmemStore) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastIdx, nil
}

// GetLog implements LogStore. The entry is copied, so the caller may keep and modify it.
func (s *InmemStore) GetLog(index uint64, log *Log) error {
	s.mu.RLock()
	l, ok := s.logs[index]
	s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: index %d", ErrLogNotFound, index)
	}
	*log = *l
	log.Data = append([]byte(nil), l.Data...)
	log.Extensions = append([]byte(nil), l.Extensions...)
	return nil
}

// StoreLog implements LogStore.
func (s *InmemStore) StoreLog(log *Log) error {
	return s.StoreLogs([]*Log{log})
}

// StoreLogs implements LogStore. Entries must have consecutive indexes that follow the last
// stored one (or start anywhere when the store is empty).
func (s *InmemStore) StoreLogs(logs []*Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.lastIdx + 1
	for i, l := range logs {
		if s.lastIdx != 0 && l.Index != next+uint64(i) {
			return fmt.Errorf("raft: inmem store: out of order index %d, want %d", l.Index, next+uint64(i))
		}
		if i > 0 && l.Index != logs[i-1].Index+1 {
			return fmt.Errorf("raft: inmem store: non-consecutive index %d after %d", l.Index, logs[i-1].Index)
		}
	}
	for _, l := range logs {
		c := *l
		c.Data = append([]byte(nil), l.Data...)
		c.Extensions = append([]byte(nil), l.Extensions...)
		s.logs[l.Index] = &c
		if s.firstIdx == 0 {
			s.firstIdx = l.Index
		}
		s.lastIdx = l.Index
	}
	return nil
}

// DeleteRange implements LogStore.
func (s *InmemStore) DeleteRange(lo, hi uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lo > hi || s.lastIdx == 0 || hi < s.firstIdx || lo > s.lastIdx {
		return nil // nothing stored in the range
	}
	lo, hi = max(lo, s.firstIdx), min(hi, s.lastIdx)
	for i := lo; i <= hi; i++ {
		delete(s.logs, i)
	}
	switch {
	case lo == s.firstIdx && hi == s.lastIdx:
		s.firstIdx, s.lastIdx = 0, 0
	case lo == s.firstIdx:
		s.firstIdx = hi + 1
	case hi == s.lastIdx:
		s.lastIdx = lo - 1
	}
	return nil
}

// Set implements StableStore.
func (s *InmemStore) Set(key []byte, val []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kv[string(key)] = append([]byte(nil), val...)
	return nil
}

// Get implements StableStore. A missing key returns (nil, nil).
func (s *InmemStore) Get(key []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.kv[string(key)]
	if !ok {
		return nil, nil
	}
	return append([]byte(nil), v...), nil
}

// SetUint64 implements StableStore.
func (s *InmemStore) SetUint64(key []byte, val uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kvUint64s[string(key)] = val
	return nil
}

// GetUint64 implements StableStore. A missing key returns (0, nil).
func (s *InmemStore) GetUint64(key []byte) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.kvUint64s[string(key)], nil
}
