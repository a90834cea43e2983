package raft

import "errors"

// Sentinel errors of the snapshot stores. Errors the stores return wrap them, so callers test
// with errors.Is.
var (
	// ErrSnapshotCorrupt is wrapped by the error of a snapshot whose metadata cannot be read or
	// whose data fails its size or checksum check. Raft then falls back to an older snapshot.
	ErrSnapshotCorrupt = errors.New("raft: snapshot corrupt")

	// ErrSnapshotNotFound is wrapped by the error of Open for an ID the store does not hold.
	ErrSnapshotNotFound = errors.New("raft: snapshot not found")
)
