package tcp

import (
	"errors"
	"strings"

	"github.com/raftkit/raft"
)

// Sentinel errors of the tcp package. Errors returned by Transport methods either are one of
// these, one of the raft sentinels (raft.ErrTransportShutdown, raft.ErrBadRequest, ...), or
// wrap one of them; I/O failures additionally wrap the underlying net error, so
// errors.Is(err, os.ErrDeadlineExceeded) reports a timeout.
var (
	// ErrFrameTooLarge is returned when a frame's length exceeds Options.MaxFrameBytes, on
	// either side: a sender refuses to send it, a receiver closes the connection.
	ErrFrameTooLarge = errors.New("tcp: frame too large")

	// ErrUnknownFrameType is returned when a frame starts with a type byte this version does
	// not know.
	ErrUnknownFrameType = errors.New("tcp: unknown frame type")

	// ErrUnexpectedFrame is returned when a known frame arrives where it makes no sense: a
	// response sent to a listener, or the answer to a different request.
	ErrUnexpectedFrame = errors.New("tcp: unexpected frame")

	// ErrTruncatedFrame is returned when a connection ended or timed out in the middle of a
	// frame.
	ErrTruncatedFrame = errors.New("tcp: truncated frame")

	// ErrMalformedFrame is returned when a frame's body is not exactly one msgpack value of
	// the type its header announces.
	ErrMalformedFrame = errors.New("tcp: malformed frame body")

	// ErrTooManyConns is logged when an inbound connection is refused because
	// Options.MaxInboundConns are already open.
	ErrTooManyConns = errors.New("tcp: too many inbound connections")

	// ErrRemote is matched by every *RemoteError: the peer received the request and answered
	// with an error.
	ErrRemote = errors.New("tcp: peer answered with an error")

	// ErrPipelineShutdown is returned by a pipeline after its Close, and completes the
	// requests that were still in flight.
	ErrPipelineShutdown = errors.New("tcp: pipeline closed")

	// ErrShortSnapshot is returned by InstallSnapshot when the data reader ended before
	// InstallSnapshotRequest.Size bytes.
	ErrShortSnapshot = errors.New("tcp: snapshot data shorter than its declared size")

	// ErrNotAdvertisable is returned by NewTransport when neither the advertised address nor
	// the bound one is an address a peer could dial (for example 0.0.0.0).
	ErrNotAdvertisable = errors.New("tcp: local address is not advertisable")
)

// RemoteError is the error a peer's node answered a request with (RPC.Respond with a non-nil
// error). Only its message crosses the wire. It matches ErrRemote, and also each raft sentinel
// error whose message is a prefix of Msg (so errors.Is(err, raft.ErrBadRequest) works across
// the network when the peer wrapped that sentinel with %w).
type RemoteError struct {
	// Peer is the address the request was sent to.
	Peer raft.ServerAddress
	// Msg is the peer's error message.
	Msg string
}

// Error returns the peer's message with the peer's address.
func (e *RemoteError) Error() string {
	return "tcp: peer " + string(e.Peer) + " answered: " + e.Msg
}

// Is reports whether target is ErrRemote or a raft sentinel the remote message starts with.
func (e *RemoteError) Is(target error) bool {
	if target == ErrRemote {
		return true
	}
	for _, s := range remoteSentinels() {
		if target == s && hasSentinelPrefix(e.Msg, s.Error()) {
			return true
		}
	}
	return false
}

// remoteSentinels lists the raft errors a peer's node is expected to answer with. It is a
// function rather than a variable so the package holds no mutable state.
func remoteSentinels() [9]error {
	return [9]error{
		raft.ErrBadRequest, raft.ErrNotLeader, raft.ErrRaftShutdown, raft.ErrNotVoter,
		raft.ErrInvalidConfiguration, raft.ErrTransportShutdown, raft.ErrUnsupportedProtocol,
		raft.ErrLeadershipTransferFailed, raft.ErrInstallInProgress,
	}
}

// hasSentinelPrefix reports whether msg is sentinel, or sentinel wrapped as "sentinel: ..." or
// "sentinel (...)".
func hasSentinelPrefix(msg, sentinel string) bool {
	rest, ok := strings.CutPrefix(msg, sentinel)
	return ok && (rest == "" || rest[0] == ':' || rest[0] == ' ')
}
