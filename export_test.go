package raft

// Test-only hooks for the external raft_test package.

// BogusRequest is a request type no node knows. Tests send it to check that an unexpected
// command is refused with an error rather than a panic.
type BogusRequest struct {
	RPCHeader
	Junk string
}

// SendBogusRPC sends a BogusRequest from t to the node at target, through the same copying
// path as every real request, and returns the error the node answered with.
func SendBogusRPC(t *InmemTransport, target ServerAddress) error {
	req := &BogusRequest{RPCHeader: RPCHeader{ProtocolVersion: ProtocolVersion, ID: "bogus", Addr: t.LocalAddr()}, Junk: "?"}
	var resp AppendEntriesResponse
	return inmemCall(t, target, req, &resp)
}

// ReadCounters returns how many read confirmation rounds r ran as leader and how many
// ReadIndex RPCs it received.
func ReadCounters(r *Raft) (rounds, requests uint64) {
	return r.readRounds.Load(), r.readRequests.Load()
}

// ReadKind says how a successful read was served: leader_round, leader_lease, follower or
// follower_lease.
func ReadKind(f IndexFuture) string {
	if rf, ok := f.(*readFuture); ok && rf.Error() == nil {
		return rf.kind.String()
	}
	return ""
}

// SetProtocolRange makes c's node speak protocol versions [lo, hi] instead of its build's, so
// one test binary can hold nodes of several releases.
func SetProtocolRange(c *Config, lo, hi int) { c.protocolMin, c.protocolMax = lo, hi }

// ErrInmemStreamEnded is what an InstallSnapshot body reads as once its call returned.
var ErrInmemStreamEnded = errInmemStreamEnded

// InmemPipelineWindow is how many requests an in-memory pipeline keeps in flight.
const InmemPipelineWindow = inmemPipelineWindow

// EncodeConfiguration encodes c as a LogConfiguration entry's data, for tests that write
// such entries themselves.
func EncodeConfiguration(c Configuration) []byte { return encodeConfiguration(c) }
