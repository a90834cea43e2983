package raft

import (
	"context"
	"fmt"
	"time"
)

// Leadership transfer (Ongaro's thesis, section 3.10): the leader stops taking writes, brings
// the target's log up to date, and sends it TimeoutNow; the target starts an election at once
// and wins it because its log is complete and voters skip their leader-stickiness check for a
// transfer.

// transferFuture is a leadership transfer request. It resolves when the target became leader,
// or with an error.
type transferFuture struct {
	deferError
	id   ServerID
	addr ServerAddress
}

// transferState is a transfer this node started as leader, kept in r.transfer from the request
// until it is settled. The leader fails it when the target leaves the configuration, TimeoutNow
// fails or its deadline passes (progressTransfer, handleTransferResult); the end of the term
// fails it unless TimeoutNow was sent (endTransfer); after that, the next leader this node
// learns of settles it (settleTransfer): success if that is the target.
type transferState struct {
	future   *transferFuture
	target   Server
	deadline time.Time
	sent     bool
	resultCh chan error // buffer 1: the TimeoutNow goroutine never blocks
}

// LeadershipTransfer hands leadership to the most up-to-date other voter. While it runs, new
// writes fail with ErrLeadershipTransferInProgress. The future resolves when another node won,
// or with an error (the old leader then keeps serving) after about two election timeouts.
func (r *Raft) LeadershipTransfer() Future {
	return r.LeadershipTransferToServer("", "")
}

// LeadershipTransferContext is LeadershipTransfer bounded by ctx as well. When ctx ends first,
// Error returns an error matching ctx.Err() and ErrEnqueueTimeout (the leader never took the
// request: no transfer started) or ErrTimeout (the transfer started and may still complete:
// watch LeaderCh or Leader).
func (r *Raft) LeadershipTransferContext(ctx context.Context) Future {
	return r.LeadershipTransferToServerContext(ctx, "", "")
}

// LeadershipTransferToServerContext is LeadershipTransferToServer bounded by ctx as well; see
// LeadershipTransferContext.
func (r *Raft) LeadershipTransferToServerContext(ctx context.Context, id ServerID, addr ServerAddress) Future {
	return r.transferLeadership(ctx, id, addr)
}

// LeadershipTransferToServer hands leadership to the given voter; see LeadershipTransfer.
func (r *Raft) LeadershipTransferToServer(id ServerID, addr ServerAddress) Future {
	return r.transferLeadership(context.Background(), id, addr)
}

func (r *Raft) transferLeadership(ctx context.Context, id ServerID, addr ServerAddress) Future {
	f := &transferFuture{id: id, addr: addr}
	// The leader reports failure itself after 2*ElectionTimeout; the future's own deadline is a
	// backstop for a node that stepped down and never hears of a new leader.
	f.init(r.shutdownCh, time.Now().Add(3*r.conf.ElectionTimeout), ctx)
	if err := r.sendLeaderRequest(f, time.Time{}, f.ctx); err != nil {
		return errorFuture{err}
	}
	// The main loop gives the lease up for the term when it serves the request; withdraw it
	// already, so that no lease read is served once this call returned.
	r.lease.Store(nil)
	return f
}

// handleTransfer starts a transfer on the leader.
func (r *Raft) handleTransfer(f *transferFuture) {
	ls := r.leaderState
	if r.transfer != nil {
		f.respond(ErrLeadershipTransferInProgress)
		return
	}
	target, err := r.pickTransferTarget(f.id, f.addr)
	if err != nil {
		f.respond(err)
		return
	}
	r.logger.Info("starting leadership transfer", "peer", string(target.ID))
	r.transfer = &transferState{
		future:   f,
		target:   target,
		deadline: time.Now().Add(2 * r.conf.ElectionTimeout),
		resultCh: make(chan error, 1),
	}
	ls.replicators[target.ID].trigger()
	r.progressTransfer()
}

// pickTransferTarget validates the requested target, or picks the voter with the highest match
// index.
func (r *Raft) pickTransferTarget(id ServerID, addr ServerAddress) (Server, error) {
	ls := r.leaderState
	if id != "" {
		s, ok := r.configurations.latest.server(id)
		if !ok || s.Suffrage != Voter || id == r.localID {
			return Server{}, fmt.Errorf("%w: %s is not another voter", ErrLeadershipTransferFailed, id)
		}
		if addr != "" && addr != s.Address {
			return Server{}, fmt.Errorf("%w: %s is at %s, not %s", ErrLeadershipTransferFailed, id, s.Address, addr)
		}
		return s, nil
	}
	var best Server
	var bestMatch uint64
	found := false
	for _, s := range r.configurations.latest.Servers {
		repl, ok := ls.replicators[s.ID]
		if s.Suffrage != Voter || !ok {
			continue
		}
		if m := repl.matchIndex.Load(); !found || m > bestMatch {
			best, bestMatch, found = s, m, true
		}
	}
	if !found {
		return Server{}, fmt.Errorf("%w: no other voter", ErrLeadershipTransferFailed)
	}
	return best, nil
}

// progressTransfer sends TimeoutNow once the target holds the whole log, and fails the
// transfer after its deadline. It runs on the leader's tick and after commits.
func (r *Raft) progressTransfer() {
	ls := r.leaderState
	t := r.transfer
	if t == nil {
		return
	}
	if time.Now().After(t.deadline) || isDone(&t.future.deferError) {
		r.failTransfer(fmt.Errorf("%w: %s did not take over in time", ErrLeadershipTransferFailed, t.target.ID))
		return
	}
	if t.sent {
		return
	}
	repl, ok := ls.replicators[t.target.ID]
	if !ok {
		r.failTransfer(fmt.Errorf("%w: %s left the configuration", ErrLeadershipTransferFailed, t.target.ID))
		return
	}
	lastIndex, _ := r.lastLogIndexTerm()
	if repl.matchIndex.Load() < lastIndex {
		return
	}
	t.sent = true
	req := &TimeoutNowRequest{RPCHeader: r.header(), Term: ls.term, LastLogIndex: lastIndex}
	target := t.target
	// One goroutine per transfer; it exits when the RPC returns (bounded by the transport).
	r.goFunc(func() {
		var resp TimeoutNowResponse
		t.resultCh <- r.trans.TimeoutNow(target.ID, target.Address, req, &resp)
	})
}

// transferResult is the channel of the running transfer's TimeoutNow outcome, or nil.
func (r *Raft) transferResult() <-chan error {
	if r.transfer == nil {
		return nil
	}
	return r.transfer.resultCh
}

// handleTransferResult records the outcome of the TimeoutNow RPC. On success the transfer
// stays pending until a new leader shows up (see settleTransfer).
func (r *Raft) handleTransferResult(err error) {
	t := r.transfer
	if t == nil || err == nil {
		// On success the target starts its election now; this node steps down when its
		// vote request arrives.
		return
	}
	r.logger.Warn("leadership transfer failed", "peer", string(t.target.ID), "error", err)
	r.failTransfer(fmt.Errorf("%w: TimeoutNow to %s: %v", ErrLeadershipTransferFailed, t.target.ID, err))
}

// failTransfer ends the transfer with err.
func (r *Raft) failTransfer(err error) {
	r.transfer.future.respond(err)
	r.transfer = nil
}

// endTransfer is the end of the leader's term for its transfer: one whose TimeoutNow was sent
// waits for the next leader (settleTransfer), any other fails. leaderCleanup calls it.
func (r *Raft) endTransfer() {
	if t := r.transfer; t != nil && !t.sent {
		r.failTransfer(fmt.Errorf("%w: leadership lost before the transfer", ErrLeadershipTransferFailed))
	}
}

// settleTransfer resolves a transfer this node started once the next leader, id, is known:
// this node follows a leader (acceptLeader) or won an election itself (setupLeaderState).
func (r *Raft) settleTransfer(id ServerID) {
	t := r.transfer
	if t == nil {
		return
	}
	r.transfer = nil
	if id == t.target.ID {
		t.future.respond(nil)
		return
	}
	t.future.respond(fmt.Errorf("%w: %s became leader instead of %s", ErrLeadershipTransferFailed, id, t.target.ID))
}

// checkTimeoutNow decides whether a TimeoutNow may start a transfer election, which skips
// pre-vote and makes voters ignore their leader stickiness: so only a request that is
// certainly part of a live transfer may. It must come from the leader this node follows, in
// the current term (a leader of an older term was deposed, and its transfer with it; one of a
// newer term is unknown to this node), and this node's log must still end where the leader
// saw it end when it sent the request (a log that moved on means the leader gave the transfer
// up and appends again, and the request arrived late). A refused transfer fails on the
// leader, which keeps leading.
func (r *Raft) checkTimeoutNow(req *TimeoutNowRequest) error {
	term := r.currentTerm.Load()
	switch {
	case req.Term != term:
		return fmt.Errorf("%w: timeout now for term %d, this node is in term %d", ErrLeadershipTransferFailed, req.Term, term)
	case r.getState() != Follower || r.leader.Load().id != req.ID:
		return fmt.Errorf("%w: timeout now from %s, which is not the leader this node follows", ErrLeadershipTransferFailed, req.ID)
	case !r.configurations.latest.isVoter(r.localID):
		return ErrNotVoter
	case r.localRestoreBusy():
		return ErrInstallInProgress
	case r.catchingUp():
		return fmt.Errorf("%w: %s started without state and is still catching up", ErrLeadershipTransferFailed, r.localID)
	}
	if last, _ := r.lastLogIndexTerm(); req.LastLogIndex != 0 && last != req.LastLogIndex {
		return fmt.Errorf("%w: stale timeout now: sent for a log ending at %d, this node's ends at %d", ErrLeadershipTransferFailed, req.LastLogIndex, last)
	}
	return nil
}

// handleTimeoutNow starts an election at once, skipping pre-vote (leadership transfer).
func (r *Raft) handleTimeoutNow(rpc RPC, req *TimeoutNowRequest) {
	resp := &TimeoutNowResponse{RPCHeader: r.header(), Term: r.currentTerm.Load()}
	if err := r.checkHeader(req.RPCHeader, &resp.RPCHeader); err != nil {
		rpc.Respond(nil, err)
		return
	}
	if err := r.checkTimeoutNow(req); err != nil {
		r.logger.Warn("refusing timeout now", "peer", string(req.ID), "error", err)
		rpc.Respond(nil, err)
		return
	}
	r.logger.Info("timeout now received, starting election", "peer", string(req.ID))
	r.setLeader("", "")
	r.transferElection = true
	r.setState(Candidate)
	rpc.Respond(resp, nil)
}
