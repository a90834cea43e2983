package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
)

// The stable file holds every StableStore key and value; stableMagic opens its payload.
const (
	stableFileName = "STABLE"
	stableMagic    = "RKWALSTB"
)

// Set implements raft.StableStore. It rewrites the stable file atomically and durably (temp
// file, fsync, rename, fsync of the directory) before it returns; a crash leaves either the
// old or the new value. val is copied.
func (s *Store) Set(key []byte, val []byte) error {
	s.stableWriteMu.Lock()
	defer s.stableWriteMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.corruptErr(); err != nil {
		return err
	}
	s.kvMu.RLock()
	payload, err := encodeStable(s.kv, string(key), val)
	s.kvMu.RUnlock()
	if err != nil {
		return err
	}
	if err := writeSealedFile(s.dir, stableFileName, payload, s.opts.noSync); err != nil {
		return fmt.Errorf("wal: write stable file: %w", err)
	}
	s.kvMu.Lock()
	s.kv[string(key)] = append([]byte{}, val...)
	s.kvMu.Unlock()
	return nil
}

// Get implements raft.StableStore: the value under key, or (nil, nil) if there is none. The
// returned slice is a copy the caller owns.
func (s *Store) Get(key []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	s.kvMu.RLock()
	defer s.kvMu.RUnlock()
	v, ok := s.kv[string(key)]
	if !ok {
		return nil, nil
	}
	return append([]byte{}, v...), nil
}

// SetUint64 implements raft.StableStore. The value is stored as 8 big-endian bytes under key,
// so Get on the same key returns those bytes.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 implements raft.StableStore: the value under key, or (0, nil) if there is none. A
// value that is not 8 bytes long (one stored with Set) is an error.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("wal: stable key %q holds %d bytes, not a uint64", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// encodeStable encodes kv with key set to val, without modifying kv. Keys are sorted so the
// same content always encodes to the same bytes.
func encodeStable(kv map[string][]byte, key string, val []byte) ([]byte, error) {
	keys := make([]string, 0, len(kv)+1)
	size := len(stableMagic) + 4
	for k, v := range kv {
		if k != key {
			keys = append(keys, k)
			size += 8 + len(k) + len(v)
		}
	}
	keys = append(keys, key)
	size += 8 + len(key) + len(val)
	if size+4 > maxSealedFileBytes {
		return nil, fmt.Errorf("%w: stable file would hold %d bytes, limit %d", ErrTooLarge, size+4, maxSealedFileBytes)
	}
	sort.Strings(keys)
	buf := make([]byte, 0, size)
	buf = append(buf, stableMagic...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(keys)))
	for _, k := range keys {
		v := kv[k]
		if k == key {
			v = val
		}
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(k)))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(v)))
		buf = append(buf, k...)
		buf = append(buf, v...)
	}
	return buf, nil
}

// decodeStable decodes a stable file payload, checking every length against what is left.
// It accepts only the canonical form encodeStable writes: keys unique and sorted.
func decodeStable(payload []byte) (map[string][]byte, error) {
	if len(payload) < len(stableMagic)+4 || string(payload[:len(stableMagic)]) != stableMagic {
		return nil, errors.New("not a stable file")
	}
	count := binary.LittleEndian.Uint32(payload[len(stableMagic):])
	rest := payload[len(stableMagic)+4:]
	// Every pair takes at least 8 bytes, which bounds the map size hint by the file size.
	if uint64(count)*8 > uint64(len(rest)) {
		return nil, fmt.Errorf("count %d does not fit in %d bytes", count, len(rest))
	}
	kv := make(map[string][]byte, count)
	prev := ""
	for i := uint32(0); i < count; i++ {
		if len(rest) < 8 {
			return nil, fmt.Errorf("pair %d cut short", i)
		}
		kl, vl := uint64(binary.LittleEndian.Uint32(rest)), uint64(binary.LittleEndian.Uint32(rest[4:]))
		rest = rest[8:]
		if kl+vl > uint64(len(rest)) {
			return nil, fmt.Errorf("pair %d of %d bytes exceeds the %d left", i, kl+vl, len(rest))
		}
		key := string(rest[:kl])
		if i > 0 && key <= prev {
			return nil, fmt.Errorf("pair %d: keys not in strictly increasing order", i)
		}
		kv[key] = append([]byte{}, rest[kl:kl+vl]...)
		prev = key
		rest = rest[kl+vl:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(rest))
	}
	return kv, nil
}

// loadStable reads the stable file at Open. A missing file is an empty store; a corrupt one is
// an error, never an empty store, because losing the vote could let this node vote twice.
func (s *Store) loadStable() error {
	payload, ok, err := readSealedFile(s.dir, stableFileName)
	if err != nil {
		return err
	}
	s.kv = map[string][]byte{}
	if !ok {
		return nil
	}
	kv, err := decodeStable(payload)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, filepath.Join(s.dir, stableFileName), err)
	}
	s.kv = kv
	return nil
}
