package kv

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"sync"

	"github.com/raftkit/raft"
)

// restorePrealloc caps the map size preallocated from a count read from the snapshot: the
// count comes from disk, so it must not decide an allocation on its own.
const restorePrealloc = 1 << 16

// ErrBadSnapshot wraps every reason Restore refuses a snapshot.
var ErrBadSnapshot = errors.New("kv: malformed snapshot")

// FSM is the replicated state machine of raftkv: the key/value data, plus the HTTP address of
// each member (so any node can forward a request to the leader).
//
// Concurrency: Raft calls Apply, Snapshot and Restore from its FSM goroutine, one at a time.
// HTTP handlers call Get, MemberHTTP and Len from any goroutine. mu guards the maps against
// those readers; it is held only around map operations, never across I/O.
//
// Snapshots follow the raft.FSM contract: Snapshot runs on the FSM goroutine, so applies wait
// while it runs, and it must be cheap. It hands out the current maps as they are and counts
// them as shared; the next write clones a shared map before changing it (copy-on-write). The
// snapshot's Persist then streams its maps to the sink without any lock, concurrently with
// later applies, and nobody ever writes to them again. The clone costs O(n) once per snapshot,
// on the first write after it, and only while the snapshot is outstanding: Release ends that.
type FSM struct {
	mu      sync.RWMutex
	data    map[string]string // key -> value
	members map[string]string // raft server ID -> HTTP address
	gen     uint64            // bumped each time the maps are replaced
	shared  int               // outstanding snapshots holding the maps of generation gen
}

// NewFSM returns an empty FSM.
func NewFSM() *FSM {
	return &FSM{data: make(map[string]string), members: make(map[string]string)}
}

// Apply implements raft.FSM. It returns a Result; an entry that is not a valid command
// changes nothing and returns a Result carrying ErrBadCommand.
func (f *FSM) Apply(l *raft.Log) any {
	c, err := DecodeCommand(l.Data)
	if err != nil {
		return Result{Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unshareLocked()
	var existed bool
	switch c.Op {
	case OpSet:
		_, existed = f.data[c.Key]
		f.data[c.Key] = c.Value
	case OpDelete:
		_, existed = f.data[c.Key]
		delete(f.data, c.Key)
	case OpRegister:
		_, existed = f.members[c.Key]
		f.members[c.Key] = c.Value
	}
	return Result{Existed: existed}
}

// unshareLocked gives the FSM private maps before a write when a snapshot holds the current
// ones. Called with mu held for writing.
func (f *FSM) unshareLocked() {
	if f.shared == 0 {
		return
	}
	f.data = maps.Clone(f.data)
	f.members = maps.Clone(f.members)
	f.gen++
	f.shared = 0
}

// Get returns the value stored under key in this node's copy of the state.
func (f *FSM) Get(key string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.data[key]
	return v, ok
}

// Len returns the number of keys.
func (f *FSM) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.data)
}

// MemberHTTP returns the HTTP address registered for the raft server id.
func (f *FSM) MemberHTTP(id raft.ServerID) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.members[string(id)]
	return a, ok
}

// Snapshot implements raft.FSM: O(1), it only marks the current maps shared.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shared++
	return &fsmSnapshot{fsm: f, gen: f.gen, data: f.data, members: f.members}, nil
}

// Restore implements raft.FSM: it replaces the whole state with the snapshot read from rc.
// On error the current state is kept.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, members, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data, f.members = data, members
	f.gen++
	f.shared = 0
	return nil
}

// fsmSnapshot is the point-in-time state Snapshot captured. Its maps are never written again.
type fsmSnapshot struct {
	fsm     *FSM
	gen     uint64
	data    map[string]string
	members map[string]string
}

// The snapshot format (version 2), written by Persist:
//
//	snapshotMagic            8 bytes
//	uvarint                  number of members m
//	uvarint                  number of keys k
//	m member entries, then k key entries, each:
//	  uvarint length, key bytes, uvarint length, value bytes
//
// Entries are in key order, so equal states give equal bytes. Every byte of keys and values
// is kept as it is. Version 1 snapshots (older raftkv: a JSON header line, then one JSON
// object per entry) start with '{' and are still read.
const snapshotMagic = "RKVSNAP2"

// maxSnapshotItemBytes bounds a key or value length read from a snapshot: a length comes from
// disk or the network and must not decide an allocation alone. Values are far smaller (the
// transport's frame limit bounds every entry), so only a corrupt snapshot reaches it.
const maxSnapshotItemBytes = 64 << 20

// Persist implements raft.FSMSnapshot: it streams the captured maps to the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("kv: persisting snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var num [binary.MaxVarintLen64]byte
	putLen := func(n int) {
		_, _ = bw.Write(binary.AppendUvarint(num[:0], uint64(n)))
	}
	_, _ = bw.WriteString(snapshotMagic)
	putLen(len(s.members))
	putLen(len(s.data))
	for _, m := range []map[string]string{s.members, s.data} {
		for _, k := range sortedKeys(m) {
			putLen(len(k))
			_, _ = bw.WriteString(k)
			putLen(len(m[k]))
			if _, err := bw.WriteString(m[k]); err != nil {
				return err // a bufio.Writer keeps its first error: checking the last write suffices
			}
		}
	}
	return bw.Flush()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Release implements raft.FSMSnapshot: once no snapshot holds the current maps, writes stop
// cloning them.
func (s *fsmSnapshot) Release() {
	f := s.fsm
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.gen == f.gen && f.shared > 0 {
		f.shared--
	}
}

// readSnapshot decodes what Persist wrote (either version). The counts in it come from disk:
// they bound how many entries are read, but never size an allocation beyond restorePrealloc.
func readSnapshot(r io.Reader) (data, members map[string]string, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if first, err := br.Peek(1); err == nil && first[0] == '{' {
		return readSnapshotV1(br)
	}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, nil, fmt.Errorf("%w: not a raftkv snapshot", ErrBadSnapshot)
	}
	nMembers, err1 := binary.ReadUvarint(br)
	nKeys, err2 := binary.ReadUvarint(br)
	if err := errors.Join(err1, err2); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if members, err = readBinaryEntries(br, nMembers); err != nil {
		return nil, nil, err
	}
	if data, err = readBinaryEntries(br, nKeys); err != nil {
		return nil, nil, err
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%w: data after the last entry", ErrBadSnapshot)
	}
	return data, members, nil
}

func readBinaryEntries(br *bufio.Reader, n uint64) (map[string]string, error) {
	m := make(map[string]string, min(n, restorePrealloc))
	for i := uint64(0); i < n; i++ {
		k, err1 := readItem(br)
		v, err2 := readItem(br)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("%w: entry %d of %d: %v", ErrBadSnapshot, i, n, err)
		}
		m[k] = v
	}
	return m, nil
}

// readItem reads one length-prefixed byte string. Long items grow their buffer only as bytes
// arrive, so a corrupt length costs no more memory than the data that is really there.
func readItem(br *bufio.Reader) (string, error) {
	n, err := binary.ReadUvarint(br)
	switch {
	case err != nil:
		return "", err
	case n > maxSnapshotItemBytes:
		return "", fmt.Errorf("item of %d bytes is over the limit of %d", n, maxSnapshotItemBytes)
	case n <= 64<<10:
		b := make([]byte, n)
		_, err := io.ReadFull(br, b)
		return string(b), err
	}
	b, err := io.ReadAll(io.LimitReader(br, int64(n)))
	if err == nil && uint64(len(b)) != n {
		err = io.ErrUnexpectedEOF
	}
	return string(b), err
}

// snapshotHeaderV1 opens a version 1 (JSON) snapshot; Members then Keys entries follow, one
// JSON object per line.
type snapshotHeaderV1 struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Members int    `json:"members"`
	Keys    int    `json:"keys"`
}

// snapshotEntryV1 is one key/value pair (or member) of a version 1 snapshot.
type snapshotEntryV1 struct {
	K string `json:"k"`
	V string `json:"v"`
}

// readSnapshotV1 reads a snapshot written by an older raftkv.
func readSnapshotV1(r io.Reader) (data, members map[string]string, err error) {
	dec := json.NewDecoder(r)
	var hdr snapshotHeaderV1
	if err := dec.Decode(&hdr); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if hdr.Format != "raftkv-snapshot" || hdr.Version != 1 || hdr.Members < 0 || hdr.Keys < 0 {
		return nil, nil, fmt.Errorf("%w: header %+v", ErrBadSnapshot, hdr)
	}
	if members, err = readEntriesV1(dec, hdr.Members); err != nil {
		return nil, nil, err
	}
	if data, err = readEntriesV1(dec, hdr.Keys); err != nil {
		return nil, nil, err
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%w: data after the last entry", ErrBadSnapshot)
	}
	return data, members, nil
}

func readEntriesV1(dec *json.Decoder, n int) (map[string]string, error) {
	m := make(map[string]string, min(n, restorePrealloc))
	for i := 0; i < n; i++ {
		var e snapshotEntryV1
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("%w: entry %d of %d: %v", ErrBadSnapshot, i, n, err)
		}
		m[e.K] = e.V
	}
	return m, nil
}

// Members returns the number of registered members.
func (f *FSM) Members() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.members)
}

// MemberIDs returns the IDs of the registered members, sorted.
func (f *FSM) MemberIDs() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedKeys(f.members)
}
