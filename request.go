package raft

import (
	"context"
	"time"
)

// leaderRequest is a public call that only the leader serves (VerifyLeader, ReadIndex,
// membership changes, leadership transfer, Restore). They share one channel into the main
// loop: the leader loop serves them, every other loop rejects them with ErrNotLeader.
// Apply keeps its own channel, since the leader drains it in batches.
type leaderRequest interface {
	// serve runs the request on the leader's main loop.
	serve(r *Raft)
	// reject fails the request without running it.
	reject(err error)
}

func (v *verifyFuture) serve(r *Raft)          { r.handleVerify(v) }
func (v *verifyFuture) reject(err error)       { v.respond(err) }
func (f *configChangeFuture) serve(r *Raft)    { r.handleConfigChange(f) }
func (f *configChangeFuture) reject(err error) { f.respond(err) }
func (f *restoreFuture) serve(r *Raft)         { r.handleRestore(f) }
func (f *restoreFuture) reject(err error)      { f.respond(err) }
func (f *transferFuture) reject(err error)     { f.respond(err) }

// serve gives up the lease before the transfer can send TimeoutNow: the target's voters
// skip their leader stickiness for its election, which is what the lease rests on.
func (f *transferFuture) serve(r *Raft) {
	r.revokeLease()
	r.handleTransfer(f)
}

// sendLeaderRequest hands req to the main loop, waiting at most until deadline (zero: no
// limit) or until ctx ends (nil: no context). It fails with ErrNotLeader at once on a node
// that is not the leader. A request not handed over fails with ErrEnqueueTimeout (wrapping
// ctx.Err() when ctx ended): it never reached the main loop and takes no effect.
func (r *Raft) sendLeaderRequest(req leaderRequest, deadline time.Time, ctx context.Context) error {
	switch r.getState() {
	case Leader:
	case Shutdown:
		return ErrRaftShutdown
	default:
		return r.notLeaderErr()
	}
	return handOff(r.leaderReqCh, req, deadline, ctx, r.shutdownCh)
}
