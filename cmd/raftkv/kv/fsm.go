package kv

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"sync"

	"github.com/raftkit/raft"
)

// snapshotFormat and snapshotVersion open every snapshot this FSM writes, so Restore refuses
// data that is not its own instead of loading nonsense.
const (
	snapshotFormat  = "raftkv-snapshot"
	snapshotVersion = 1
	// restorePrealloc caps the map size preallocated from a count read from the snapshot:
	// the count comes from disk, so it must not decide an allocation on its own.
	restorePrealloc = 1 << 16
)

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

// snapshotHeader is the first JSON value of a snapshot; Members then Keys entries follow, one
// JSON object per line.
type snapshotHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Members int    `json:"members"`
	Keys    int    `json:"keys"`
}

// snapshotEntry is one key/value pair (or one member ID and HTTP address).
type snapshotEntry struct {
	K string `json:"k"`
	V string `json:"v"`
}

// Persist implements raft.FSMSnapshot: it streams the captured maps to the sink, one entry
// per line, in key order so that equal states give equal bytes.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("kv: persisting snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	hdr := snapshotHeader{Format: snapshotFormat, Version: snapshotVersion, Members: len(s.members), Keys: len(s.data)}
	if err := enc.Encode(hdr); err != nil {
		return err
	}
	for _, m := range []map[string]string{s.members, s.data} {
		for _, k := range sortedKeys(m) {
			if err := enc.Encode(snapshotEntry{K: k, V: m[k]}); err != nil {
				return err
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

// readSnapshot decodes what Persist wrote. The counts in the header come from disk: they
// bound how many entries are read, but never size an allocation beyond restorePrealloc.
func readSnapshot(r io.Reader) (data, members map[string]string, err error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	var hdr snapshotHeader
	if err := dec.Decode(&hdr); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if hdr.Format != snapshotFormat || hdr.Version != snapshotVersion || hdr.Members < 0 || hdr.Keys < 0 {
		return nil, nil, fmt.Errorf("%w: header %+v", ErrBadSnapshot, hdr)
	}
	if members, err = readEntries(dec, hdr.Members); err != nil {
		return nil, nil, err
	}
	if data, err = readEntries(dec, hdr.Keys); err != nil {
		return nil, nil, err
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%w: data after the last entry", ErrBadSnapshot)
	}
	return data, members, nil
}

func readEntries(dec *json.Decoder, n int) (map[string]string, error) {
	m := make(map[string]string, min(n, restorePrealloc))
	for i := 0; i < n; i++ {
		var e snapshotEntry
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
