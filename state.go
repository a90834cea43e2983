package raft

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"sync/atomic"
	"time"
)

// RaftState is a node's role.
type RaftState uint32

const (
	// Follower is the state every node starts in.
	Follower RaftState = iota
	// Candidate is the state of a node running an election (or a pre-vote).
	Candidate
	// Leader is the state of the node that replicates the log.
	Leader
	// Shutdown is the state after Shutdown.
	Shutdown
)

func (s RaftState) String() string {
	switch s {
	case Follower:
		return "follower"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	case Shutdown:
		return "shutdown"
	default:
		return fmt.Sprintf("state(%d)", uint32(s))
	}
}

// indexTerm names a log position.
type indexTerm struct {
	index uint64
	term  uint64
}

// leaderInfo is the leader this node knows of.
type leaderInfo struct {
	id   ServerID
	addr ServerAddress
}

// published holds what the main loop publishes for readers on other goroutines. Each field
// has exactly one writer, named next to it; readers never block on it, so status calls never
// wait for the disk or the main loop.
type published struct {
	state       atomic.Uint32             // main loop
	currentTerm atomic.Uint64             // main loop
	commitIndex atomic.Uint64             // main loop
	lastLog     atomic.Pointer[indexTerm] // main loop: last entry in the log (or the snapshot's)
	leader      atomic.Pointer[leaderInfo]
	configs     atomic.Pointer[configurations] // main loop
	lastContact atomic.Int64                   // main loop: monotonic nanos since clockBase of the last leader contact
	rounds      atomic.Uint64                  // main loop: election rounds (pre-vote or vote) run
	applied     atomic.Pointer[indexTerm]      // FSM goroutine: last applied entry
	// appliedNotify is closed and replaced whenever applied moves (FSM goroutine) or the
	// unconfirmed snapshot is settled (main loop), so readers can wait without polling.
	appliedNotify atomic.Pointer[chan struct{}]
	// unconfirmedIndex is the index of the node's unconfirmed snapshot (see unconfirmed), zero
	// if none: while it is set the FSM may hold a state the cluster never commits, and no read
	// is served (waitApplied). Main loop.
	unconfirmedIndex atomic.Uint64
	snapshot         atomic.Pointer[indexTerm] // main loop; snapshot goroutine by CAS (see compactLogs)
	fenced           atomic.Bool               // main loop: the catch-up fence holds
	fenceTarget      atomic.Uint64             // main loop: the index the fenced node catches up to
}

func (p *published) getState() RaftState { return RaftState(p.state.Load()) }

func (p *published) lastLogIndexTerm() (uint64, uint64) {
	it := p.lastLog.Load()
	return it.index, it.term
}

func (p *published) appliedIndexTerm() (uint64, uint64) {
	it := p.applied.Load()
	return it.index, it.term
}

func (p *published) snapshotIndexTerm() (uint64, uint64) {
	it := p.snapshot.Load()
	return it.index, it.term
}

// encodeVote packs the term a vote was cast in with the candidate, so the two are always
// written together.
func encodeVote(term uint64, candidate ServerID) []byte {
	buf := make([]byte, 8+len(candidate))
	binary.BigEndian.PutUint64(buf, term)
	copy(buf[8:], candidate)
	return buf
}

// decodeVote reverses encodeVote. Nil (no vote yet) decodes to zero values.
func decodeVote(b []byte) (uint64, ServerID, error) {
	if len(b) == 0 {
		return 0, "", nil
	}
	if len(b) < 8 {
		return 0, "", fmt.Errorf("raft: stored vote is %d bytes, want at least 8", len(b))
	}
	return binary.BigEndian.Uint64(b), ServerID(b[8:]), nil
}

// randomTimeout returns a channel that fires after a duration drawn from [d, 2d).
func randomTimeout(rng *rand.Rand, d time.Duration) <-chan time.Time {
	return time.After(d + time.Duration(rng.Int63n(int64(d))))
}
