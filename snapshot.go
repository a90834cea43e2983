package raft

import "io"

// SnapshotVersion is the snapshot format version this build writes and understands.
const SnapshotVersion = 1

// SnapshotMeta describes a stored snapshot.
type SnapshotMeta struct {
	// Version is the SnapshotVersion it was written with.
	Version int
	// ID is the store's name for the snapshot.
	ID string
	// Index and Term are those of the last log entry the snapshot includes.
	Index uint64
	Term  uint64
	// Configuration is the latest configuration as of Index, and ConfigurationIndex the index
	// of the entry that carried it.
	Configuration      Configuration
	ConfigurationIndex uint64
	// Size is the size of the snapshot data in bytes.
	Size int64
}

// SnapshotStore stores FSM snapshots. Implementations must be safe for concurrent use: the
// snapshot goroutine writes while the main loop and replication goroutines list and read.
type SnapshotStore interface {
	// Create starts a new snapshot. The data is written to the returned sink; the snapshot
	// becomes visible to List and Open only once the sink is closed successfully.
	Create(version int, index, term uint64, configuration Configuration, configurationIndex uint64) (SnapshotSink, error)

	// List returns the metadata of the stored snapshots, newest first.
	List() ([]*SnapshotMeta, error)

	// Open returns the metadata and a reader of the named snapshot. The caller closes the
	// reader. A snapshot whose data fails its integrity check returns an error.
	Open(id string) (*SnapshotMeta, io.ReadCloser, error)
}

// SnapshotSink receives the data of a snapshot being created.
type SnapshotSink interface {
	io.WriteCloser
	// ID returns the ID the snapshot will have.
	ID() string
	// Cancel abandons the snapshot and removes what was written.
	Cancel() error
}
