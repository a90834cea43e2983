package raft

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// The catch-up fence keeps a node that started with no state at all from voting until it has
// caught up from a leader.
//
// A node cannot tell a first start from a data directory that was wiped or lost: both leave
// it with no term, no vote, no log and no snapshot. A voter that lost its directory and is
// restarted in place with the same ID and address may have acknowledged entries a quorum
// counted, and granted a vote in its last term, that it no longer holds. Voting with an empty
// log it would help a candidate that lacks those entries win (the quorum intersection Raft
// relies on is broken), and it could vote twice in one term. So such a node refuses votes and
// pre-votes, does not campaign and refuses TimeoutNow until a leader has brought its log up to
// the index the leader reported when it first replicated to the node: the larger of the
// leader's commit index and the end of the leader's first request, which covers every entry
// the node acknowledged to that leader and every entry committed before it. The leader's
// Log Matching property makes a successful append through that index proof that the node
// holds the leader's log up to it. Lifting the fence also records a vote for that leader in
// its term, so the node cannot elect anyone else in the term it may have voted in already.
//
// The fence is durable (keyCatchUpFence): a node that crashes while catching up restarts
// fenced, although it now holds some state. Bootstrapping (which declares the node part of a
// new cluster) clears it. Config.EmptyStartVotes turns the fence off.

// keyCatchUpFence marks a fenced node: 8 bytes, the index it must catch up to (0 while no
// leader has told it yet). Missing or empty when the node is not fenced.
var keyCatchUpFence = []byte("CatchUpFence")

// catchUpFence is the fence's state. Main loop only, except the atomics in published.
type catchUpFence struct {
	on     bool
	target uint64 // 0 until the first leader request that replicates
	warned bool   // a refused vote was logged once
}

// loadCatchUpFence sets the fence at start-up: from its durable mark, or for a node that
// holds no state at all (recover runs it after loading everything else).
func (r *Raft) loadCatchUpFence() error {
	if r.conf.EmptyStartVotes {
		return nil
	}
	b, err := r.stable.Get(keyCatchUpFence)
	if err != nil {
		return fmt.Errorf("raft: reading the catch-up fence: %w", err)
	}
	switch {
	case len(b) == 8:
		r.fence = catchUpFence{on: true, target: binary.BigEndian.Uint64(b)}
	case len(b) != 0:
		return fmt.Errorf("%w: the catch-up fence is %d bytes, want 8", ErrStorageDamaged, len(b))
	case r.holdsNoState():
		r.fence = catchUpFence{on: true}
		if err := r.persistCatchUpFence(0); err != nil {
			return err
		}
		r.logger.Info("started without any state: not voting until caught up from a leader")
	default:
		return nil
	}
	r.publishCatchUpFence()
	return nil
}

// holdsNoState reports whether the node has no term, no vote, no log and no snapshot.
func (r *Raft) holdsNoState() bool {
	last, _ := r.lastLogIndexTerm()
	snap, _ := r.snapshotIndexTerm()
	return r.currentTerm.Load() == 0 && r.votedTerm == 0 && last == 0 && snap == 0
}

func (r *Raft) persistCatchUpFence(target uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], target)
	if err := r.stable.Set(keyCatchUpFence, b[:]); err != nil {
		return fmt.Errorf("raft: persisting the catch-up fence: %w", err)
	}
	return nil
}

func (r *Raft) publishCatchUpFence() {
	r.fenced.Store(r.fence.on)
	r.fenceTarget.Store(r.fence.target)
}

// catchingUp reports whether the fence holds: the node must not vote, pre-vote or campaign.
func (r *Raft) catchingUp() bool { return r.fence.on }

// learnCatchUpTarget records the index to catch up to from the first leader request that
// carries replication (a heartbeat carries none): reached is the last index the request
// covers, commit the leader's commit index.
func (r *Raft) learnCatchUpTarget(reached, commit uint64) bool {
	if !r.fence.on || r.fence.target != 0 || max(reached, commit) == 0 {
		return true
	}
	target := max(reached, commit)
	if err := r.persistCatchUpFence(target); err != nil {
		r.fatal(err)
		return false
	}
	r.fence.target = target
	r.publishCatchUpFence()
	r.logger.Info("catching up from the leader before voting", "leader", string(r.leader.Load().id), "index", target)
	return true
}

// liftCatchUpFence lifts the fence once the leader confirmed that this node's log matches its
// own through matched. It first votes for that leader in its term (see the file comment).
func (r *Raft) liftCatchUpFence(matched uint64) bool {
	if !r.fence.on || r.fence.target == 0 || matched < r.fence.target {
		return true
	}
	term, leader := r.currentTerm.Load(), r.leader.Load().id
	if r.votedTerm < term && !r.persistVote(term, leader) {
		return false
	}
	if err := r.stable.Set(keyCatchUpFence, nil); err != nil {
		r.fatal(fmt.Errorf("raft: clearing the catch-up fence: %w", err))
		return false
	}
	r.logger.Info("caught up from the leader: voting again", "leader", string(leader), "index", matched)
	r.fence = catchUpFence{}
	r.publishCatchUpFence()
	return true
}

// refuseWhileCatchingUp logs, once per fence, why a vote was refused: the node cannot tell a
// new cluster from a lost data directory, and a new cluster whose other servers start empty
// never elects a leader this way.
func (r *Raft) refuseWhileCatchingUp(kind string, candidate ServerID) {
	if r.fence.warned {
		r.logger.Debug("refusing "+kind+" while catching up", "candidate", string(candidate))
		return
	}
	r.fence.warned = true
	r.logger.Warn("refusing "+kind+": this node started without any state and has not caught up from a leader yet "+
		"(it cannot tell a first start from a lost data directory). For a new cluster, bootstrap every initial server "+
		"with the same configuration, or one server with itself alone and add the others; see Config.EmptyStartVotes",
		"candidate", string(candidate))
}

// statsCatchingUp is Stats' "catching_up": "false", or, while the fence holds, the index the
// node catches up to ("unknown" until a leader replicated to it).
func (r *Raft) statsCatchingUp() string {
	if !r.fenced.Load() {
		return "false"
	}
	if t := r.fenceTarget.Load(); t != 0 {
		return "until index " + strconv.FormatUint(t, 10)
	}
	return "until a leader replicates"
}
