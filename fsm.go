package raft

import "io"

// FSM is the user's replicated state machine.
//
// All three methods are called from one goroutine, the node's FSM goroutine, never
// concurrently with each other, so an FSM needs no locking against Raft (it still needs it
// against its own readers).
type FSM interface {
	// Apply applies one committed entry of type LogCommand and returns a value that is
	// handed to the ApplyFuture of the node that accepted the command. It must be
	// deterministic: every node applies the same entries in the same order and must reach
	// the same state. It must not keep log.Data after returning unless it copies it.
	Apply(log *Log) any

	// Snapshot returns a point-in-time snapshot of the state. It runs on the FSM goroutine,
	// so applies wait while it runs: it must be cheap (take a reference to an immutable or
	// copy-on-write structure) and leave the expensive work to FSMSnapshot.Persist, which
	// runs concurrently with later applies.
	Snapshot() (FSMSnapshot, error)

	// Restore replaces the whole state with the snapshot read from r, discarding the current
	// state. It must close r.
	Restore(r io.ReadCloser) error
}

// BatchingFSM is an optional extension: an FSM that implements it receives committed commands
// in batches, which lets it amortize work such as a disk write per batch.
type BatchingFSM interface {
	FSM

	// ApplyBatch applies the entries in order and returns one response per entry, in order.
	// It is called on the FSM goroutine like Apply.
	ApplyBatch(logs []*Log) []any
}

// FSMSnapshot is a snapshot returned by FSM.Snapshot.
type FSMSnapshot interface {
	// Persist writes the snapshot to sink and closes it, or calls sink.Cancel on failure.
	// It runs on the snapshot goroutine, concurrently with FSM.Apply: it must read only the
	// state captured when Snapshot was called.
	Persist(sink SnapshotSink) error

	// Release is called once the snapshot is no longer needed, whether Persist succeeded
	// or not.
	Release()
}
