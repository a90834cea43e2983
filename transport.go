package raft

import (
	"fmt"
	"io"
	"time"
)

// ServerID is a server's stable, unique identity within a cluster.
type ServerID string

// ServerAddress is the network address a Transport reaches a server at.
type ServerAddress string

// Wire protocol versions. A build speaks every version in [ProtocolVersionMin,
// ProtocolVersionMax]: it accepts requests carrying any of them and answers each in the
// version of its request, while its own requests carry Config.ProtocolVersion. A request
// outside the range is refused with an error wrapping ErrUnsupportedProtocol. A release that
// changes the wire format raises ProtocolVersionMax and keeps the previous version in its
// range, so two adjacent releases can run in one cluster (docs/compatibility.md).
const (
	// ProtocolVersionMin is the oldest protocol version this build accepts.
	ProtocolVersionMin = 1
	// ProtocolVersionMax is the newest protocol version this build speaks.
	ProtocolVersionMax = 1
	// ProtocolVersion is the version a node sends by default: ProtocolVersionMax.
	ProtocolVersion = ProtocolVersionMax
)

// Transport carries RPCs between nodes. Implementations must be safe for concurrent use: the
// main loop, every replication goroutine and every heartbeat goroutine call it at once.
//
// Outgoing calls block until the peer answered, the transport's own timeout fired, or the
// transport closed; they never block forever. Incoming requests are delivered on Consumer and
// answered with RPC.Respond.
//
// Ownership: request and response structs passed to a call belong to the caller; a transport
// must not retain them after the call (or, for a pipeline, after its future completes). Values
// delivered through Consumer belong to the receiver.
type Transport interface {
	// Consumer returns the channel incoming requests arrive on. The node reads it from its
	// main loop only.
	Consumer() <-chan RPC

	// LocalAddr is the address peers reach this node at.
	LocalAddr() ServerAddress

	// AppendEntries sends one AppendEntries request and fills in resp. Implementations
	// should carry requests without entries (heartbeats) on a path that never waits behind
	// large requests or snapshot streams.
	AppendEntries(id ServerID, target ServerAddress, args *AppendEntriesRequest, resp *AppendEntriesResponse) error

	// AppendEntriesPipeline opens a pipeline of in-flight AppendEntries to the peer, or
	// returns ErrPipelineUnsupported.
	AppendEntriesPipeline(id ServerID, target ServerAddress) (AppendPipeline, error)

	// RequestVote sends a vote request and fills in resp.
	RequestVote(id ServerID, target ServerAddress, args *RequestVoteRequest, resp *RequestVoteResponse) error

	// RequestPreVote sends a pre-vote request and fills in resp.
	RequestPreVote(id ServerID, target ServerAddress, args *RequestPreVoteRequest, resp *RequestPreVoteResponse) error

	// InstallSnapshot sends the request and streams data after it, then fills in resp.
	InstallSnapshot(id ServerID, target ServerAddress, args *InstallSnapshotRequest, resp *InstallSnapshotResponse, data io.Reader) error

	// TimeoutNow asks the peer to start an election at once (leadership transfer).
	TimeoutNow(id ServerID, target ServerAddress, args *TimeoutNowRequest, resp *TimeoutNowResponse) error

	// ReadIndex asks the leader for a read index on behalf of reads waiting on a follower or
	// non-voter, and fills in resp. It is called by the node's read forwarder goroutine, one
	// call at a time, and blocks like the others.
	ReadIndex(id ServerID, target ServerAddress, args *ReadIndexRequest, resp *ReadIndexResponse) error

	// Close stops the transport: pending and later calls fail with ErrTransportShutdown.
	Close() error
}

// AppendPipeline keeps several AppendEntries in flight to one peer. Responses are delivered
// on Consumer in the order the requests were sent.
type AppendPipeline interface {
	// AppendEntries sends a request without waiting for its response. resp is filled in
	// before the returned future is delivered on Consumer.
	AppendEntries(args *AppendEntriesRequest, resp *AppendEntriesResponse) (AppendFuture, error)

	// Consumer delivers completed requests, in order.
	Consumer() <-chan AppendFuture

	// Close stops the pipeline; in-flight requests complete with an error.
	Close() error
}

// AppendFuture is one pipelined AppendEntries.
type AppendFuture interface {
	// Error blocks until the request completed and returns its transport error, if any.
	Error() error
	// Start is when the request was sent.
	Start() time.Time
	// Request is the request that was sent.
	Request() *AppendEntriesRequest
	// Response is the peer's response; valid only once Error returned nil.
	Response() *AppendEntriesResponse
}

// RPC is one incoming request, delivered on Transport.Consumer.
type RPC struct {
	// Command is the request: one of *AppendEntriesRequest, *RequestVoteRequest,
	// *RequestPreVoteRequest, *InstallSnapshotRequest, *TimeoutNowRequest or
	// *ReadIndexRequest.
	Command any
	// Reader carries the snapshot body of an InstallSnapshot request; nil otherwise.
	Reader io.Reader
	// RespChan receives exactly one response. Transports give it a buffer of one so the
	// receiver never blocks answering.
	RespChan chan<- RPCResponse
}

// Respond answers the request. It never blocks as long as RespChan has room for the one
// response, which transports guarantee.
func (r *RPC) Respond(resp any, err error) {
	r.RespChan <- RPCResponse{Response: resp, Error: err}
}

// RPCResponse is the answer to an RPC.
type RPCResponse struct {
	Response any
	Error    error
}

// The wire structs. Every message starts with an RPCHeader. Field names are the msgpack
// encoding; renaming one breaks compatibility with running clusters.

// RPCHeader identifies the sender of every message.
type RPCHeader struct {
	// ProtocolVersion is the version the message is written in: the sender's
	// Config.ProtocolVersion for a request, the request's version for a response.
	ProtocolVersion int
	// ID and Addr name the sender; followers learn the leader from them.
	ID   ServerID
	Addr ServerAddress
}

// AppendEntriesRequest replicates entries and carries the commit index (Raft paper, Figure 2).
// A request without entries and with PrevLogIndex 0 is a heartbeat: it asserts leadership but
// neither checks nor changes the log.
type AppendEntriesRequest struct {
	RPCHeader
	Term              uint64
	PrevLogIndex      uint64
	PrevLogTerm       uint64
	Entries           []*Log
	LeaderCommitIndex uint64
}

// AppendEntriesResponse answers an AppendEntriesRequest. A rejection for a log mismatch carries
// a conflict hint so the leader can skip a whole term per round trip (Raft paper, section 5.3,
// the optimization at its end).
type AppendEntriesResponse struct {
	RPCHeader
	Term    uint64
	Success bool
	// LastLogIndex is the follower's last log index.
	LastLogIndex uint64
	// ConflictTerm is the term of the follower's entry at PrevLogIndex, or 0 if the follower
	// has no entry there. ConflictIndex is the first index the follower holds with
	// ConflictTerm (or LastLogIndex+1 when ConflictTerm is 0).
	ConflictTerm  uint64
	ConflictIndex uint64
	// NeedSnapshot is set, with Success false, by a follower whose own snapshot, at
	// SnapshotIndex and SnapshotTerm, is a Restore the cluster did not commit and that the
	// leader's log contradicts: the follower acknowledges nothing until the leader sent it a
	// committed snapshot newer (by term, then index) than that one. Older leaders ignore the
	// fields and the follower goes on refusing their entries.
	NeedSnapshot  bool
	SnapshotIndex uint64
	SnapshotTerm  uint64
}

// RequestVoteRequest asks for a vote (Raft paper, Figure 2).
type RequestVoteRequest struct {
	RPCHeader
	Term         uint64
	LastLogIndex uint64
	LastLogTerm  uint64
	// LeadershipTransfer is set when the candidate was told to run by TimeoutNow; voters
	// then skip the check that they have not heard from a leader recently.
	LeadershipTransfer bool
}

// RequestVoteResponse answers a RequestVoteRequest.
type RequestVoteResponse struct {
	RPCHeader
	Term    uint64
	Granted bool
}

// RequestPreVoteRequest asks whether the sender would win an election for Term without
// anyone changing their term (Ongaro's thesis, section 9.6).
type RequestPreVoteRequest struct {
	RPCHeader
	// Term is the term the candidate would use: its current term plus one.
	Term         uint64
	LastLogIndex uint64
	LastLogTerm  uint64
}

// RequestPreVoteResponse answers a RequestPreVoteRequest.
type RequestPreVoteResponse struct {
	RPCHeader
	// Term is the responder's current term.
	Term    uint64
	Granted bool
}

// InstallSnapshotRequest is sent to a follower whose next entry was already compacted away.
// The snapshot body (Size bytes) follows on the stream.
type InstallSnapshotRequest struct {
	RPCHeader
	SnapshotVersion int
	Term            uint64
	LastLogIndex    uint64
	LastLogTerm     uint64
	// Configuration is the encoded configuration as of LastLogIndex, ConfigurationIndex the
	// index it was committed at.
	Configuration      []byte
	ConfigurationIndex uint64
	Size               int64
	// LeaderCommitIndex is the leader's commit index when it sent the snapshot. A snapshot
	// past it (the leader's own Restore, not yet committed) is installed as unconfirmed: see
	// markUnconfirmedSnapshot. Zero, from older senders, means committed.
	LeaderCommitIndex uint64
}

// InstallSnapshotResponse answers an InstallSnapshotRequest.
type InstallSnapshotResponse struct {
	RPCHeader
	Term    uint64
	Success bool
}

// TimeoutNowRequest tells a follower to start an election at once (leadership transfer).
type TimeoutNowRequest struct {
	RPCHeader
	Term uint64
	// LastLogIndex is the leader's last index when it found the target caught up. The target
	// refuses a TimeoutNow once its log moved past it: the request is stale (the leader gave
	// the transfer up and appended again). Zero, from older senders, skips the check.
	LastLogIndex uint64
}

// TimeoutNowResponse answers a TimeoutNowRequest.
type TimeoutNowResponse struct {
	RPCHeader
	Term uint64
}

// ReadIndexRequest asks the leader for a read index (Ongaro's thesis, section 6.4: reads
// served by followers). The sender carries every read that queued on it since its previous
// request, so a burst of follower reads costs one request. The leader answers after a
// leadership confirmation that started after the request arrived (or from its lease, when
// Lease is set and the lease holds), so a response can never carry an index older than a
// write acknowledged before the request was sent; a duplicated or retried request simply
// gets a fresh answer of its own.
type ReadIndexRequest struct {
	RPCHeader
	// Term is the sender's current term, for logs.
	Term uint64
	// Lease says every read in the batch accepts an answer from the leader's lease.
	Lease bool
	// Reads is how many reads the request carries, for metrics.
	Reads int
}

// ReadIndexResponse answers a ReadIndexRequest: the leader's commit index at a moment it
// was confirmed leader. A node that cannot answer (not the leader, leadership lost during the
// confirmation) answers with an error instead.
type ReadIndexResponse struct {
	RPCHeader
	// Term is the leader's term.
	Term uint64
	// ReadIndex is the index the sender's FSM must have applied before its reads run.
	ReadIndex uint64
	// FromLease says the leader answered from its lease rather than a confirmation round.
	FromLease bool
}

// processRPC handles one incoming request on the main loop. Nothing a peer sends can make it
// panic: malformed requests are answered with an error wrapping ErrBadRequest.
func (r *Raft) processRPC(rpc RPC) {
	start := time.Now()
	kind := "unknown"
	switch cmd := rpc.Command.(type) {
	case *AppendEntriesRequest:
		kind = "append_entries"
		r.handleAppendEntries(rpc, cmd)
	case *RequestVoteRequest:
		kind = "request_vote"
		r.handleRequestVote(rpc, cmd)
	case *RequestPreVoteRequest:
		kind = "request_pre_vote"
		r.handleRequestPreVote(rpc, cmd)
	case *InstallSnapshotRequest:
		kind = "install_snapshot"
		r.handleInstallSnapshot(rpc, cmd)
	case *TimeoutNowRequest:
		kind = "timeout_now"
		r.handleTimeoutNow(rpc, cmd)
	case *ReadIndexRequest:
		kind = "read_index"
		r.handleReadIndexRequest(rpc, cmd)
	default:
		r.logger.Warn("unexpected rpc command", "error", fmt.Sprintf("%T", rpc.Command))
		rpc.Respond(nil, fmt.Errorf("%w: unexpected command %T", ErrBadRequest, rpc.Command))
	}
	rpcProcessMetric(kind, start)
}

// checkHeader refuses requests in a protocol version outside this node's range, or without a
// sender. It sets resp, the response's header, to answer in the request's version.
func (r *Raft) checkHeader(h RPCHeader, resp *RPCHeader) error {
	if h.ProtocolVersion < r.protocolMin || h.ProtocolVersion > r.protocolMax {
		err := fmt.Errorf("%w: %s (%s) sends version %d, %s speaks %d to %d", ErrUnsupportedProtocol,
			h.ID, h.Addr, h.ProtocolVersion, r.localID, r.protocolMin, r.protocolMax)
		// The peer retries for as long as it runs: say it once a minute, not per request.
		if now := time.Now(); now.Sub(r.protocolWarnAt) >= time.Minute {
			r.protocolWarnAt = now
			r.logger.Warn("refusing peer with unsupported protocol version", "peer", string(h.ID), "error", err)
		}
		return err
	}
	if h.ID == "" || h.Addr == "" {
		return fmt.Errorf("%w: sender without ID or address", ErrBadRequest)
	}
	resp.ProtocolVersion = h.ProtocolVersion
	return nil
}

// header is the RPCHeader of every message this node sends.
func (r *Raft) header() RPCHeader {
	return RPCHeader{ProtocolVersion: r.protocolVersion, ID: r.localID, Addr: r.localAddr}
}
