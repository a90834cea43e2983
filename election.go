package raft

// Elections, both sides: the candidate's rounds (runCandidate, campaign, requestVotes) and the
// voter's answers (decideVote, which the vote and pre-vote handlers share). Leadership
// transfer's TimeoutNow lives with the transfer code (transfer.go).

import (
	"time"
)

// voteResult is one voter's answer to a (pre-)vote request.
type voteResult struct {
	voter   ServerID
	term    uint64
	granted bool
}

// runCandidate runs one election round: a pre-vote campaign unless disabled (or this round
// follows a TimeoutNow), then the real one. It returns when the node won, learned of a higher
// term or a leader, a campaign timed out (the main loop then starts another round), or on
// shutdown.
func (r *Raft) runCandidate() {
	r.rounds.Add(1)
	transfer := r.transferElection
	r.transferElection = false
	preVote := !r.conf.PreVoteDisabled && !transfer
	electionMetric(preVote)
	if preVote {
		r.logger.Info("entering candidate state, pre-vote", "term", r.currentTerm.Load()+1)
		if !r.campaign(true, false) {
			return
		}
	}
	if !r.startElection() {
		return
	}
	if r.campaign(false, transfer) {
		r.setState(Leader)
		r.setLeader(r.localID, r.localAddr)
	}
}

// campaign asks every voter for a vote, or a pre-vote for the next term, and serves the main
// loop meanwhile. It reports whether a quorum granted it; false when the node learned of a
// higher term or a leader (it is no longer a candidate), the campaign timed out, or on
// shutdown.
func (r *Raft) campaign(preVote, transfer bool) bool {
	votes := r.requestVotes(preVote, transfer)
	needed := r.configurations.latest.quorumSize()
	granted := 0
	timeout := randomTimeout(r.rng, r.conf.ElectionTimeout)
	for r.getState() == Candidate {
		select {
		case v := <-votes:
			if v.term > r.currentTerm.Load() && !v.granted {
				r.logger.Info("newer term discovered, falling back to follower", "term", v.term)
				r.stepDown(v.term, nil)
				return false
			}
			if !v.granted {
				continue
			}
			if granted++; granted >= needed {
				if !preVote {
					r.logger.Info("election won", "term", r.currentTerm.Load(), "votes", granted)
				}
				return true
			}
		case rpc := <-r.rpcCh:
			r.processRPC(rpc)
		case f := <-r.applyCh:
			f.respond(r.notLeaderErr())
		case req := <-r.leaderReqCh:
			req.reject(r.notLeaderErr())
		case b := <-r.bootstrapCh:
			b.respond(ErrCantBootstrap)
		case <-r.fsmq.room:
			r.applyCommitted(r.commitIndex.Load(), nil)
		case err := <-r.restoreDone():
			r.restoreStepDone(err)
		case <-timeout:
			r.logger.Warn("election timeout reached, restarting election", "term", r.currentTerm.Load())
			return false
		case <-r.shutdownCh:
			return false
		}
	}
	return false
}

// startElection moves to a new term and votes for itself, both durably.
func (r *Raft) startElection() bool {
	term := r.currentTerm.Load() + 1
	if !r.setCurrentTerm(term) || !r.persistVote(term, r.localID) {
		return false
	}
	r.setLeader("", "")
	r.logger.Info("starting election", "term", term)
	return true
}

// requestVotes asks every voter of the latest configuration, itself included, for a vote
// (or a pre-vote for the next term). Answers arrive on the returned channel, which has room
// for all of them so the asking goroutines never block.
func (r *Raft) requestVotes(preVote, transfer bool) <-chan voteResult {
	voters := r.configurations.latest.voters()
	ch := make(chan voteResult, len(voters))
	term := r.currentTerm.Load()
	lastIndex, lastTerm := r.lastLogIndexTerm()
	header := r.header()
	for _, s := range r.configurations.latest.Servers {
		if s.Suffrage != Voter {
			continue
		}
		if s.ID == r.localID {
			// Our own vote: for a pre-vote nothing is written; the real vote was persisted
			// by startElection.
			ch <- voteResult{voter: s.ID, term: term, granted: true}
			continue
		}
		peer := s
		// One goroutine per voter for this round; it exits when the RPC returns, which the
		// transport bounds with its timeout (and Close on shutdown).
		r.goFunc(func() {
			res := voteResult{voter: peer.ID}
			start := time.Now()
			if preVote {
				req := &RequestPreVoteRequest{RPCHeader: header, Term: term + 1, LastLogIndex: lastIndex, LastLogTerm: lastTerm}
				var resp RequestPreVoteResponse
				if err := r.trans.RequestPreVote(peer.ID, peer.Address, req, &resp); err != nil {
					r.logger.Debug("pre-vote request failed", "peer", string(peer.ID), "error", err)
				} else {
					res.term, res.granted = resp.Term, resp.Granted
				}
			} else {
				req := &RequestVoteRequest{RPCHeader: header, Term: term, LastLogIndex: lastIndex, LastLogTerm: lastTerm, LeadershipTransfer: transfer}
				var resp RequestVoteResponse
				if err := r.trans.RequestVote(peer.ID, peer.Address, req, &resp); err != nil {
					r.logger.Debug("vote request failed", "peer", string(peer.ID), "error", err)
				} else {
					res.term, res.granted = resp.Term, resp.Granted
				}
			}
			rpcMetric("request_vote", peer.ID, start)
			ch <- res
		})
	}
	return ch
}

// logUpToDate reports whether a candidate's log is at least as up to date as ours (Raft
// paper, section 5.4.1): a later last term wins, and for equal terms the longer log.
func (r *Raft) logUpToDate(lastIndex, lastTerm uint64) bool {
	myIndex, myTerm := r.lastLogIndexTerm()
	return lastTerm > myTerm || (lastTerm == myTerm && lastIndex >= myIndex)
}

// leaderRecentlyHeard reports whether this node heard from a live leader within the minimum
// election timeout, in which case it ignores vote requests that are not part of a
// leadership transfer (Ongaro's thesis, section 4.2.3).
//
// A node that started less than HeartbeatTimeout ago counts as having heard from one: its
// previous incarnation may have acknowledged a leader's heartbeat just before it crashed, and
// that leader's lease (read.go) still counts the acknowledgement. Granting a vote at once
// would let another candidate win while the old leader serves lease reads without the writes
// the new one commits. It costs a cold start nothing: followers wait at least that long
// before they campaign.
func (r *Raft) leaderRecentlyHeard() bool {
	if r.getState() == Leader {
		return true
	}
	if r.leader.Load().id == "" {
		return r.monoNow() < r.conf.HeartbeatTimeout
	}
	return r.sinceContact() < r.conf.HeartbeatTimeout
}

// ballot is a vote or pre-vote request as the voting rules read it.
type ballot struct {
	candidate           ServerID
	term                uint64 // the term the candidate asks a vote for
	lastIndex, lastTerm uint64 // the candidate's last log entry
	preVote             bool   // a question only: would this node vote in term? Nothing changes.
	transfer            bool   // part of a leadership transfer: leader stickiness does not apply
}

// verdict is what the voting rules decide about a ballot.
type verdict struct {
	grant bool
	// adoptTerm is set for a real vote in a term newer than ours: the node moves to that term
	// (and follows no leader) before it answers, granted or not (Raft paper, Figure 2, "Rules
	// for Servers").
	adoptTerm bool
	refusal   string // why it was refused, for the log
}

// Refusals a handler acts on.
const (
	refusedLeaderAlive = "a leader was heard from recently"
	refusedCatchingUp  = "this node started without state and is catching up"
)

// decideVote applies the voting rules to a vote or a pre-vote, in the order they read, and
// changes nothing (the handlers act on the verdict):
//  1. a term older than ours is refused; so is our own term for a pre-vote, which asks about
//     the term the candidate would campaign in, and a campaign in ours cannot be won by a
//     node that is not already the candidate we voted for (strictly higher, as etcd does; a
//     refusal carries our term, so a lagging candidate catches up with it);
//  2. leader stickiness (Ongaro's thesis, section 4.2.3): a node that heard from a live
//     leader within HeartbeatTimeout (see leaderRecentlyHeard) refuses, unless the request is
//     part of a leadership transfer or comes from that leader itself, which gave up its
//     leadership to campaign (its lease ended when it stepped down);
//  3. one vote per term: in a term this node voted in, only that candidate is granted again;
//  4. a node held by the catch-up fence (catchup_fence.go) refuses;
//  5. the candidate's log must be at least as up to date as ours (paper, section 5.4.1).
func (r *Raft) decideVote(b ballot) verdict {
	term := r.currentTerm.Load()
	switch {
	case b.term < term || b.preVote && b.term == term:
		return verdict{refusal: "stale term"}
	case !b.transfer && r.leaderRecentlyHeard() && r.leader.Load().id != b.candidate:
		return verdict{refusal: refusedLeaderAlive}
	}
	v := verdict{adoptTerm: !b.preVote && b.term > term}
	switch {
	case r.votedTerm == b.term && r.votedFor != "":
		v.grant = r.votedFor == b.candidate
		if !v.grant {
			v.refusal = "already voted for " + string(r.votedFor) + " in this term"
		}
	case r.catchingUp():
		v.refusal = refusedCatchingUp
	case !r.logUpToDate(b.lastIndex, b.lastTerm):
		v.refusal = "the candidate's log is behind"
	default:
		v.grant = true
	}
	return v
}

// handleRequestVote answers a vote request (Raft paper, Figure 2): it moves to a newer term
// when the rules say so, and persists a new vote before the answer leaves.
func (r *Raft) handleRequestVote(rpc RPC, req *RequestVoteRequest) {
	resp := &RequestVoteResponse{RPCHeader: r.header(), Term: r.currentTerm.Load()}
	if err := r.checkHeader(req.RPCHeader, &resp.RPCHeader); err != nil {
		rpc.Respond(nil, err)
		return
	}
	v := r.decideVote(ballot{candidate: req.ID, term: req.Term, lastIndex: req.LastLogIndex, lastTerm: req.LastLogTerm,
		transfer: req.LeadershipTransfer})
	r.noteRefusal("vote", req.ID, req.Term, v)
	if v.adoptTerm {
		r.logger.Info("newer term in vote request, stepping down", "peer", string(req.ID), "term", req.Term)
		if !r.stepDown(req.Term, ErrLeadershipLost) {
			rpc.Respond(nil, ErrRaftShutdown)
			return
		}
		r.setLeader("", "")
		resp.Term = req.Term
	}
	if v.grant && (r.votedTerm != req.Term || r.votedFor != req.ID) {
		if !r.persistVote(req.Term, req.ID) {
			rpc.Respond(nil, ErrRaftShutdown)
			return
		}
		r.touchContact()
		r.logger.Info("vote granted", "peer", string(req.ID), "term", req.Term)
	}
	resp.Granted = v.grant
	rpc.Respond(resp, nil)
}

// handleRequestPreVote answers whether this node would vote, without changing any state.
func (r *Raft) handleRequestPreVote(rpc RPC, req *RequestPreVoteRequest) {
	resp := &RequestPreVoteResponse{RPCHeader: r.header(), Term: r.currentTerm.Load()}
	if err := r.checkHeader(req.RPCHeader, &resp.RPCHeader); err != nil {
		rpc.Respond(nil, err)
		return
	}
	v := r.decideVote(ballot{candidate: req.ID, term: req.Term, lastIndex: req.LastLogIndex, lastTerm: req.LastLogTerm, preVote: true})
	r.noteRefusal("pre-vote", req.ID, req.Term, v)
	resp.Granted = v.grant
	rpc.Respond(resp, nil)
}

// noteRefusal logs a refused ballot: at debug level, except the catch-up fence's first
// refusal, which tells the operator why (refuseWhileCatchingUp).
func (r *Raft) noteRefusal(kind string, candidate ServerID, term uint64, v verdict) {
	switch {
	case v.grant:
	case v.refusal == refusedCatchingUp:
		r.refuseWhileCatchingUp(kind, candidate)
	default:
		r.logger.Debug("refusing "+kind, "peer", string(candidate), "term", term, "reason", v.refusal)
	}
}
