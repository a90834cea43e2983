package raft

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error a public method returns either is one of these or wraps one, so
// callers test with errors.Is.
var (
	// ErrNotLeader is returned by leader-only calls on a node that is not the leader. The
	// concrete error is a *NotLeaderError carrying the known leader, if any. The command was
	// not applied.
	ErrNotLeader = errors.New("raft: not leader")

	// ErrLeadershipLost is returned when the leader lost its leadership before a request
	// completed. The outcome is unknown: the entry may still commit under a later leader.
	ErrLeadershipLost = errors.New("raft: leadership lost while committing log")

	// ErrEnqueueTimeout is returned when a request could not be queued within its timeout.
	// The command was not applied.
	ErrEnqueueTimeout = errors.New("raft: timed out enqueuing operation")

	// ErrTimeout is returned when a request was queued but did not complete within its
	// timeout. The outcome is unknown: the entry may still commit.
	ErrTimeout = errors.New("raft: timed out waiting for the outcome")

	// ErrRaftShutdown is returned by every call made on (or pending at) a node that shut down.
	ErrRaftShutdown = errors.New("raft: raft is shutdown")

	// ErrAbortedByRestore is returned to in-flight applies discarded by a user snapshot
	// restore.
	ErrAbortedByRestore = errors.New("raft: snapshot restored while committing log")

	// ErrInvalidRestore is wrapped by the error of a Restore whose arguments cannot be
	// restored: no metadata or reader, an unsupported snapshot version, a negative or absurd
	// size or index, or data whose length differs from meta.Size. Nothing changed.
	ErrInvalidRestore = errors.New("raft: invalid snapshot to restore")

	// ErrFSMContract is the cause a node stops with when the user's FSM breaks its contract
	// (BatchingFSM.ApplyBatch returning a response count other than its entry count): the
	// FSM's state is then unknown, so the node applies nothing more.
	ErrFSMContract = errors.New("raft: FSM broke its contract")

	// ErrUncommittedRestore is wrapped by the errors of a node holding a snapshot the cluster
	// may not have committed (the leader's own Restore, or such a snapshot installed from it):
	// it refuses AppendEntries it could only acknowledge by skipping entries, and snapshots
	// that cannot reset it. Such a node heals itself: once a leader's log contradicts the
	// snapshot, it is reset from the leader's snapshot. It is also the cause a node stops with
	// when a snapshot not marked unconfirmed disagrees with its leader's log, which only broken
	// storage or a broken peer can produce.
	ErrUncommittedRestore = errors.New("raft: restored snapshot was never committed by the cluster")

	// ErrSnapshotCorrupt is wrapped by the error of a snapshot whose metadata cannot be read
	// or whose data fails its size or checksum check. Raft then falls back to an older one.
	ErrSnapshotCorrupt = errors.New("raft: snapshot corrupt")

	// ErrStorageDamaged is returned by NewRaft when the node's stores do not hold everything
	// the node held before: a gap between the snapshot and the log, a damaged snapshot the
	// log does not cover, or a log that does not start at the beginning with no snapshot. Such
	// a node may have acknowledged entries or votes it no longer holds, so it must not run
	// as the voter it was; rebuild it from the cluster (docs/operating.md). Errors from the
	// stores themselves (wal.ErrCorrupt, ErrSnapshotCorrupt) are returned wrapped as they are.
	ErrStorageDamaged = errors.New("raft: storage damaged")

	// ErrSnapshotStoreLocked is returned by NewFileSnapshotStore when another store, in this
	// process or another, holds the directory.
	ErrSnapshotStoreLocked = errors.New("raft: snapshot directory locked by another store")

	// ErrUnsupportedSnapshotFormat is returned when a stored snapshot was written in a format
	// newer than this build reads (a newer release wrote it). Nothing is changed on disk.
	ErrUnsupportedSnapshotFormat = errors.New("raft: unsupported snapshot store format")

	// ErrSnapshotNotFound is wrapped by the error of SnapshotStore.Open for an unknown ID.
	ErrSnapshotNotFound = errors.New("raft: snapshot not found")

	// ErrCantBootstrap is returned by BootstrapCluster when the stores already hold state.
	ErrCantBootstrap = errors.New("raft: bootstrap only works on new clusters")

	// ErrLeadershipTransferInProgress is returned to writes while a leadership transfer runs.
	ErrLeadershipTransferInProgress = errors.New("raft: leadership transfer in progress")

	// ErrLeadershipTransferFailed is returned when a leadership transfer could not complete:
	// the target is unknown or unreachable, did not catch up, or did not win in time.
	ErrLeadershipTransferFailed = errors.New("raft: leadership transfer failed")

	// ErrNothingNewToSnapshot is returned by Snapshot when nothing was applied since the last
	// snapshot.
	ErrNothingNewToSnapshot = errors.New("raft: nothing new to snapshot")

	// ErrConfigurationChanged is returned by a membership change whose prevIndex no longer
	// matches the latest configuration index.
	ErrConfigurationChanged = errors.New("raft: configuration changed since prevIndex")

	// ErrInvalidConfig wraps every configuration validation failure.
	ErrInvalidConfig = errors.New("raft: invalid config")

	// ErrInvalidConfiguration wraps every invalid cluster membership configuration.
	ErrInvalidConfiguration = errors.New("raft: invalid cluster configuration")

	// ErrLogNotFound is returned by a LogStore for an index it does not hold.
	ErrLogNotFound = errors.New("raft: log not found")

	// ErrLogStoreTimeout is the cause a leader reports when a local log write took longer
	// than Config.LogStoreTimeout and it stepped down.
	ErrLogStoreTimeout = errors.New("raft: log store write timed out")

	// ErrPipelineUnsupported is returned by Transport.AppendEntriesPipeline when the
	// transport has no pipelined mode; replication then stays in the plain mode.
	ErrPipelineUnsupported = errors.New("raft: pipeline replication not supported")

	// ErrTransportShutdown is returned by transport calls after Close.
	ErrTransportShutdown = errors.New("raft: transport shutdown")

	// ErrUnknownPeer is returned by a transport that cannot reach the named peer at all.
	ErrUnknownPeer = errors.New("raft: unknown peer")

	// ErrBadRequest is returned to a peer whose request is malformed (bad indexes, unknown log
	// type, undecodable configuration). The node keeps running.
	ErrBadRequest = errors.New("raft: malformed request")

	// ErrEntryTooLarge is returned by Apply, ApplyLog and ApplyContext for an entry larger
	// than Config.MaxEntryBytes. The command was not applied.
	ErrEntryTooLarge = errors.New("raft: entry too large")
	// ErrNoLeader is returned by a read on a follower or non-voter that could not get a read
	// index: no leader is known, the leader could not be reached, or it could not confirm
	// its leadership. The read did not happen; retry, or ask the leader.
	ErrNoLeader = errors.New("raft: no leader to confirm the read")

	// ErrUnsupportedProtocol is returned to a peer whose request carries a protocol version
	// outside the range this node speaks ([ProtocolVersionMin, ProtocolVersionMax] of its
	// build). The message names both. The node keeps running; the peer must be upgraded (or
	// downgraded) to a release whose range overlaps, see docs/compatibility.md.
	ErrUnsupportedProtocol = errors.New("raft: unsupported protocol version")

	// ErrInstallInProgress is returned to a leader that sends log entries, a commit index or
	// a second snapshot to a node still installing the snapshot it received: its FSM is being
	// restored and its log will be made to fit the snapshot once that is done. The leader
	// backs off and retries; heartbeats are answered throughout.
	ErrInstallInProgress = errors.New("raft: snapshot install in progress")

	// ErrNotVoter is returned when an operation requires this node to be a voter.
	ErrNotVoter = errors.New("raft: not a voter")
)

// NotLeaderError is the concrete error behind ErrNotLeader. It names the leader this node
// knows of, which may be empty, so a client can redirect.
type NotLeaderError struct {
	LeaderID      ServerID
	LeaderAddress ServerAddress
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return ErrNotLeader.Error() + " (no known leader)"
	}
	return fmt.Sprintf("%s (leader is %s at %s)", ErrNotLeader.Error(), e.LeaderID, e.LeaderAddress)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
