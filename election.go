package raft

import (
	"time"
)

// voteResult is one voter's answer to a (pre-)vote request.
type voteResult struct {
	voter   ServerID
	term    uint64
	granted bool
}

// runCandidate runs one election round: a pre-vote unless disabled (or this round follows a
// TimeoutNow), then the real vote. It returns when the node won, learned of a higher term or
// a leader, the round timed out (the main loop then starts another round), or on shutdown.
func (r *Raft) runCandidate() {
	r.rounds.Add(1)
	preVote := !r.conf.PreVoteDisabled && !r.transferElection
	transfer := r.transferElection
	r.transferElection = false
	var votes <-chan voteResult
	if preVote {
		r.logger.Info("entering candidate state, pre-vote", "term", r.currentTerm.Load()+1)
		votes = r.requestVotes(true, false)
	} else {
		if !r.startElection() {
			return
		}
		votes = r.requestVotes(false, transfer)
	}
	electionMetric(preVote)
	needed := r.configurations.latest.quorumSize()
	granted := 0
	timeout := randomTimeout(r.rng, r.conf.ElectionTimeout)
	for r.getState() == Candidate {
		select {
		case v := <-votes:
			if v.term > r.currentTerm.Load() && !v.granted {
				r.logger.Info("newer term discovered, falling back to follower", "term", v.term)
				r.stepDown(v.term, nil)
				return
			}
			if !v.granted {
				continue
			}
			granted++
			if granted < needed {
				continue
			}
			if preVote {
				// Pre-vote won: run the real election.
				preVote, granted = false, 0
				if !r.startElection() {
					return
				}
				votes = r.requestVotes(false, false)
				timeout = randomTimeout(r.rng, r.conf.ElectionTimeout)
				continue
			}
			r.logger.Info("election won", "term", r.currentTerm.Load(), "votes", granted)
			r.setState(Leader)
			r.setLeader(r.localID, r.localAddr)
			return
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
			return
		case <-r.shutdownCh:
			return
		}
	}
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

// header is the RPCHeader of every message this node sends.
func (r *Raft) header() RPCHeader {
	return RPCHeader{ProtocolVersion: r.protocolVersion, ID: r.localID, Addr: r.localAddr}
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
