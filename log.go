package raft

import "fmt"

// LogType says what a log entry carries and who consumes it.
type LogType uint8

const (
	// LogCommand is a user command, handed to FSM.Apply once committed.
	LogCommand LogType = iota + 1

	// LogNoop is appended by every new leader at the start of its term, so entries of earlier
	// terms commit through an entry of the current term (Raft paper, section 5.4.2 and 8).
	LogNoop

	// LogConfiguration carries a cluster Configuration, msgpack-encoded; only raftkit reads it.
	// It takes effect as soon as it is appended.
	LogConfiguration

	// LogBarrier is appended by Barrier; its future resolves once every entry before it was
	// applied to the FSM.
	LogBarrier
)

// String names the type for logs and errors.
func (t LogType) String() string {
	switch t {
	case LogCommand:
		return "command"
	case LogNoop:
		return "noop"
	case LogConfiguration:
		return "configuration"
	case LogBarrier:
		return "barrier"
	default:
		return fmt.Sprintf("unknown(%d)", uint8(t))
	}
}

// Valid reports whether t is a type this version understands. Entries of other types are
// refused when they arrive from a peer or are read from a store.
func (t LogType) Valid() bool { return t >= LogCommand && t <= LogBarrier }

// Log is one entry of the replicated log.
type Log struct {
	// Index is the entry's position in the log, starting at 1.
	Index uint64
	// Term is the leader term in which the entry was created.
	Term uint64
	// Type says what Data holds.
	Type LogType
	// Data is the payload: the user command, or an encoded Configuration.
	Data []byte
	// Extensions is opaque user metadata passed through to the FSM with the entry.
	Extensions []byte
}

// LogStore persists the replicated log. Implementations must be safe for concurrent use: the
// main loop appends and truncates, replication goroutines and the FSM goroutine read.
//
// Ownership: a LogStore must not keep or modify the *Log values or the byte slices it is given
// after a store call returns (copy what it keeps), and the Log it fills in GetLog belongs to
// the caller.
//
// The in-memory InmemStore and the durable wal.Store implement it; the storetest package holds
// a conformance suite for third-party implementations.
type LogStore interface {
	// FirstIndex returns the first index written, or 0 for an empty log.
	FirstIndex() (uint64, error)

	// LastIndex returns the last index written, or 0 for an empty log.
	LastIndex() (uint64, error)

	// GetLog fills in the entry at index. It returns an error wrapping ErrLogNotFound when
	// the index is outside [FirstIndex, LastIndex].
	GetLog(index uint64, log *Log) error

	// StoreLog appends one entry. See StoreLogs.
	StoreLog(log *Log) error

	// StoreLogs appends a batch of entries with consecutive indexes, durably, and returns
	// only once all of them are stable. The batch is atomic with respect to a crash as far
	// as the implementation can make it: after a crash the store holds a prefix of what was
	// acknowledged, never a hole. Callers never overwrite an existing index without first
	// calling DeleteRange on it.
	StoreLogs(logs []*Log) error

	// DeleteRange removes the entries in [min, max], inclusive. Raft only ever deletes a
	// prefix (log compaction), a suffix (conflict truncation) or the whole log. The part of
	// the range that lies outside the log must be ignored, not refused: a compaction runs
	// concurrently with the main loop and may pass a min below FirstIndex, or a range the
	// log no longer reaches, when the log was replaced in between.
	DeleteRange(min, max uint64) error
}
