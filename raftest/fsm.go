package raftest

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/raftkit/raft"
)

// Entry is one command a RecordingFSM applied.
type Entry struct {
	Index uint64
	Term  uint64
	Data  []byte
}

// RecordingFSM is an FSM that records every command it applies, in order. Apply returns the
// entry's index. Its snapshots follow the FSM contract: Snapshot only captures the current
// slice (entries are append-only, so the captured prefix never changes) and Persist encodes
// it on the snapshot goroutine.
type RecordingFSM struct {
	mu      sync.Mutex
	entries []Entry // guarded by mu; append-only between restores
}

// NewRecordingFSM returns an empty RecordingFSM.
func NewRecordingFSM() *RecordingFSM { return &RecordingFSM{} }

// Apply implements raft.FSM.
func (f *RecordingFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, Entry{Index: l.Index, Term: l.Term, Data: append([]byte(nil), l.Data...)})
	return l.Index
}

// Entries returns a copy of what was applied, in order.
func (f *RecordingFSM) Entries() []Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Entry(nil), f.entries...)
}

// Snapshot implements raft.FSM.
func (f *RecordingFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &recordingSnapshot{entries: f.entries[:len(f.entries):len(f.entries)]}, nil
}

// Restore implements raft.FSM.
func (f *RecordingFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var entries []Entry
	if err := json.NewDecoder(rc).Decode(&entries); err != nil {
		return fmt.Errorf("raftest: decoding snapshot: %w", err)
	}
	f.mu.Lock()
	f.entries = entries
	f.mu.Unlock()
	return nil
}

type recordingSnapshot struct{ entries []Entry }

func (s *recordingSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.entries); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *recordingSnapshot) Release() {}

// recorderFSM wraps a node's FSM and reports every applied entry to the checker.
type recorderFSM struct {
	inner   raft.FSM
	checker *checker
	node    raft.ServerID
	last    uint64 // FSM goroutine only: last applied index in this incarnation
}

func newRecorderFSM(inner raft.FSM, c *checker, node raft.ServerID) *recorderFSM {
	return &recorderFSM{inner: inner, checker: c, node: node}
}

func (r *recorderFSM) Apply(l *raft.Log) any {
	r.observe(l)
	return r.inner.Apply(l)
}

func (r *recorderFSM) observe(l *raft.Log) {
	if l.Index <= r.last {
		r.checker.mu.Lock()
		r.checker.violate("%s applied index %d after %d", r.node, l.Index, r.last)
		r.checker.mu.Unlock()
	}
	r.last = l.Index
	r.checker.recordApply(r.node, l)
}

func (r *recorderFSM) Snapshot() (raft.FSMSnapshot, error) { return r.inner.Snapshot() }

func (r *recorderFSM) Restore(rc io.ReadCloser) error {
	r.last = 0
	return r.inner.Restore(rc)
}

// recorderBatchFSM is a recorderFSM around a BatchingFSM, so batching stays visible to raft.
type recorderBatchFSM struct {
	*recorderFSM
	batcher raft.BatchingFSM
}

func (r recorderBatchFSM) ApplyBatch(logs []*raft.Log) []any {
	for _, l := range logs {
		r.observe(l)
	}
	return r.batcher.ApplyBatch(logs)
}

// wrapFSM returns the recorder around inner, keeping its BatchingFSM capability.
func wrapFSM(rec *recorderFSM) raft.FSM {
	if b, ok := rec.inner.(raft.BatchingFSM); ok {
		return recorderBatchFSM{recorderFSM: rec, batcher: b}
	}
	return rec
}
