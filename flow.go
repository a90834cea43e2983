package raft

// Flow control by bytes: every batch on the write path (the leader's dispatch and local
// write, each AppendEntries, the pipeline window to each follower, the FSM batches) is bounded
// by Config.MaxAppendEntries entries and by bytes, so entries of any size up to
// Config.MaxEntryBytes replicate however many arrive at once, and memory stays bounded on both
// sides of a follower far behind.

// MessageLimiter is an optional Transport extension: a transport that carries messages only
// up to a size says so. NewRaft then refuses a Config whose MaxEntryBytes or
// MaxAppendEntriesBytes would not fit, and the leader never builds an AppendEntries above the
// limit. A transport without it is assumed to carry any size.
type MessageLimiter interface {
	// MaxMessageBytes is the largest encoded message the transport sends and accepts. It
	// must not change while the transport is open.
	MaxMessageBytes() int
}

// logOverheadBytes bounds what one Log adds to an encoded message besides its Data and
// Extensions: the field names, index, term and type, and two byte-string headers
// (TestLogOverheadBytes_BoundsTheEncoding checks it against the codec).
const logOverheadBytes = 64

// appendOverheadBytes bounds what an AppendEntriesRequest from sender id at addr adds to its
// entries when encoded: header, indexes, terms and field names.
func appendOverheadBytes(id ServerID, addr ServerAddress) int {
	return 192 + len(id) + len(addr)
}

// entryBytes is what an entry counts against the byte budgets: its payload plus its encoding
// overhead.
func entryBytes(l *Log) int { return len(l.Data) + len(l.Extensions) + logOverheadBytes }

// byteBudget accumulates entries against a count and a byte bound. The first entry is always
// admitted, so an entry larger than the byte bound travels alone rather than never.
type byteBudget struct {
	maxEntries, maxBytes int
	entries, bytes       int
}

// admit reports whether an entry of n bytes still fits, and counts it if so.
func (b *byteBudget) admit(n int) bool {
	if b.entries > 0 && (b.entries >= b.maxEntries || b.bytes+n > b.maxBytes) {
		return false
	}
	b.entries++
	b.bytes += n
	return true
}

// noteFailure logs a failed attempt to replicate to the peer, which backOff then counts. A
// run of failures is logged at Warn when it starts and again only when its cause changes, at
// Debug in between: a peer that stays unreachable, or a request the transport keeps refusing,
// is visible without flooding the log.
func (s *replicator) noteFailure(err error) {
	cause := errorShape(err)
	peer := string(s.peer.Load().ID)
	if s.failures == 0 || cause != s.failureCause {
		s.r.logger.Warn("replication to peer failed", "peer", peer, "error", err)
	} else {
		s.r.logger.Debug("replication to peer failed", "peer", peer, "error", err)
	}
	s.failureCause = cause
}

// noteSuccess ends a run of failures, saying so at Info.
func (s *replicator) noteSuccess() {
	if s.failures > 0 {
		s.r.logger.Info("replication to peer resumed", "peer", string(s.peer.Load().ID))
	}
	s.failures, s.failureCause = 0, ""
}

// errorShape is err's message without its digits, so the same cause with other sizes, ports
// or indexes counts as the same cause.
func errorShape(err error) string {
	msg := []byte(err.Error())
	out := msg[:0]
	for _, c := range msg {
		if c < '0' || c > '9' {
			out = append(out, c)
		}
	}
	return string(out)
}

// pipelineWindow is how many requests a pipeline keeps in flight to one follower: at most
// pipelineDepth, and few enough that even requests of the largest size stay within
// MaxInflightBytes.
func (r *Raft) pipelineWindow() int {
	largest := max(r.conf.MaxAppendEntriesBytes, r.conf.MaxEntryBytes+logOverheadBytes)
	return min(max(r.conf.MaxInflightBytes/largest, 1), pipelineDepth)
}
