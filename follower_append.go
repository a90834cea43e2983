package raft

// The follower's append path: AppendEntries from the leader is checked, its entries are
// appended (truncating a conflicting suffix, never a committed entry), and the commit index
// follows the leader's. InstallSnapshot, the other way a follower receives the leader's log, is
// in snapshot_install.go.

import (
	"fmt"
	"math"
	"time"
)

// handleAppendEntries is the follower side of replication (Raft paper, Figure 2).
func (r *Raft) handleAppendEntries(rpc RPC, a *AppendEntriesRequest) {
	resp := &AppendEntriesResponse{RPCHeader: r.header(), Term: r.currentTerm.Load()}
	if err := r.checkHeader(a.RPCHeader, &resp.RPCHeader); err != nil {
		rpc.Respond(nil, err)
		return
	}
	// Validate before the term is looked at: a malformed request must not move this node to
	// its term or make its sender the leader.
	if err := validateEntries(a); err != nil {
		r.logger.Warn("rejecting malformed append entries", "peer", string(a.ID), "error", err)
		rpc.Respond(nil, err)
		return
	}
	if a.Term < r.currentTerm.Load() {
		resp.LastLogIndex, _ = r.lastLogIndexTerm()
		rpc.Respond(resp, nil)
		return
	}
	if err := r.acceptLeader(a.RPCHeader, a.Term); err != nil {
		rpc.Respond(nil, err)
		return
	}
	resp.Term = a.Term
	if r.localRestoreBusy() && (len(a.Entries) > 0 || a.LeaderCommitIndex > 0) {
		// Only heartbeats while a snapshot is restored: the log is made to fit the snapshot
		// once the restore finished (finishInstall).
		rpc.Respond(nil, ErrInstallInProgress)
		return
	}
	if r.unconfirmedConflicts(a) {
		r.startReset()
	}
	if r.resetting() {
		// Nothing is acknowledged or applied until the leader's snapshot replaced ours.
		resp.LastLogIndex, _ = r.lastLogIndexTerm()
		r.resetResponse(resp)
		rpc.Respond(resp, nil)
		return
	}

	reached := a.PrevLogIndex + uint64(len(a.Entries))
	if !r.learnCatchUpTarget(reached, a.LeaderCommitIndex) {
		rpc.Respond(nil, ErrRaftShutdown)
		return
	}
	ok, err := r.appendFollowerEntries(a, resp)
	if err != nil {
		rpc.Respond(nil, err)
		return
	}
	resp.LastLogIndex, _ = r.lastLogIndexTerm()
	if ok {
		if r.unconfirmed.index != 0 && reached >= r.unconfirmed.index {
			// The leader's log matched ours through the snapshot's index.
			r.confirmSnapshot()
		}
		if !r.liftCatchUpFence(reached) {
			rpc.Respond(nil, ErrRaftShutdown)
			return
		}
		resp.Success = true
		if a.LeaderCommitIndex > 0 {
			r.advanceFollowerCommit(min(a.LeaderCommitIndex, a.PrevLogIndex+uint64(len(a.Entries))))
		}
	}
	rpc.Respond(resp, nil)
}

// acceptLeader follows the sender of an AppendEntries or InstallSnapshot for term, which is
// at least the current term: a candidate, or a leader of an older term, steps down first. It
// returns the error to answer with when it cannot.
func (r *Raft) acceptLeader(h RPCHeader, term uint64) error {
	if term > r.currentTerm.Load() || r.getState() != Follower {
		if r.getState() == Leader && term == r.currentTerm.Load() {
			// Two leaders in one term cannot happen unless a peer is broken.
			r.logger.Error("leader request from another leader in our term", "peer", string(h.ID), "term", term)
			return fmt.Errorf("%w: two leaders in term %d", ErrBadRequest, term)
		}
		if !r.stepDown(term, ErrLeadershipLost) {
			return ErrRaftShutdown
		}
	}
	r.setLeader(h.ID, h.Addr)
	r.settleTransfer(h.ID)
	r.touchContact()
	return nil
}

// validateEntries checks what a peer sent before any of it touches the log: consecutive
// indexes after PrevLogIndex, known types, terms that never decrease, never pass the
// request's term and never precede PrevLogTerm, and configurations that decode.
func validateEntries(a *AppendEntriesRequest) error {
	if a.PrevLogIndex > math.MaxUint64-uint64(len(a.Entries)) {
		// The indexes would wrap around to 0 and pass the consecutive check.
		return fmt.Errorf("%w: %d entries after index %d overflow the index space", ErrBadRequest, len(a.Entries), a.PrevLogIndex)
	}
	prevTerm := a.PrevLogTerm
	for i, e := range a.Entries {
		want := a.PrevLogIndex + uint64(i) + 1
		switch {
		case e == nil:
			return fmt.Errorf("%w: nil entry at position %d", ErrBadRequest, i)
		case e.Index != want:
			return fmt.Errorf("%w: entry index %d at position %d, want %d", ErrBadRequest, e.Index, i, want)
		case !e.Type.Valid():
			return fmt.Errorf("%w: entry %d has unknown type %s", ErrBadRequest, e.Index, e.Type)
		case e.Term < prevTerm || e.Term > a.Term || e.Term == 0:
			return fmt.Errorf("%w: entry %d has term %d out of order", ErrBadRequest, e.Index, e.Term)
		}
		if e.Type == LogConfiguration {
			if _, err := decodeConfigurationEntry(e); err != nil {
				return fmt.Errorf("%w: %v", ErrBadRequest, err)
			}
		}
		prevTerm = e.Term
	}
	if a.PrevLogIndex > 0 && a.PrevLogTerm == 0 {
		return fmt.Errorf("%w: previous entry %d without a term", ErrBadRequest, a.PrevLogIndex)
	}
	return nil
}

// appendFollowerEntries checks the previous entry and appends what is new. It reports false
// with a conflict hint in resp when the logs do not match at PrevLogIndex. Only a real
// conflict (same index, different term) truncates the log; entries already held are skipped,
// so duplicated or reordered requests never cut anything.
func (r *Raft) appendFollowerEntries(a *AppendEntriesRequest, resp *AppendEntriesResponse) (bool, error) {
	lastIndex, _ := r.lastLogIndexTerm()
	snapIndex, snapTerm := r.snapshotIndexTerm()
	if err := r.checkSnapshotAgrees(a, snapIndex, snapTerm); err != nil {
		return false, err
	}
	if err := r.fencedByUnconfirmedSnapshot(a, snapIndex); err != nil {
		return false, err
	}
	if a.PrevLogIndex > lastIndex {
		resp.ConflictIndex = lastIndex + 1
		return false, nil
	}
	if a.PrevLogIndex > snapIndex {
		term, err := r.termAt(a.PrevLogIndex)
		if err != nil {
			return false, err
		}
		if term != a.PrevLogTerm {
			resp.ConflictTerm = term
			resp.ConflictIndex = r.firstIndexOfTerm(term, a.PrevLogIndex)
			return false, nil
		}
	}
	// Entries at or below the snapshot are committed and match the leader's by the Log
	// Matching property; skip them, and skip what we already hold with the same term.
	var fresh []*Log
	for i, e := range a.Entries {
		if e.Index <= snapIndex {
			continue
		}
		if e.Index > lastIndex {
			fresh = a.Entries[i:]
			break
		}
		term, err := r.termAt(e.Index)
		if err != nil {
			return false, err
		}
		if term == e.Term {
			continue
		}
		if err := r.truncateSuffix(e.Index, lastIndex); err != nil {
			return false, err
		}
		fresh = a.Entries[i:]
		break
	}
	if len(fresh) == 0 {
		return true, nil
	}
	start := time.Now()
	if err := r.logs.StoreLogs(fresh); err != nil {
		r.fatal(fmt.Errorf("raft: storing %d entries from the leader: %w", len(fresh), err))
		return false, ErrRaftShutdown
	}
	storeLogsMetric(start, len(fresh))
	last := fresh[len(fresh)-1]
	r.recent.add(fresh)
	r.recent.markDurable(last.Index)
	r.lastLog.Store(&indexTerm{index: last.Index, term: last.Term})
	r.noteConfigurationEntries(fresh)
	return true, nil
}

// checkSnapshotAgrees stops the node if the leader's log holds a different entry at our
// snapshot's index. A snapshot made from applied entries covers only committed ones, which
// every leader holds with the same term; a Restore the cluster may not have committed is
// marked unconfirmed and reset from the leader instead (unconfirmedConflicts, which runs
// first). So this happens only when the node's storage or a peer is broken: going on would
// silently diverge from the cluster, and the node stops with ErrUncommittedRestore.
func (r *Raft) checkSnapshotAgrees(a *AppendEntriesRequest, snapIndex, snapTerm uint64) error {
	if snapIndex == 0 {
		return nil
	}
	leaderTerm, ok := uint64(0), false
	if a.PrevLogIndex == snapIndex {
		leaderTerm, ok = a.PrevLogTerm, true
	}
	if n := uint64(len(a.Entries)); !ok && a.PrevLogIndex < snapIndex && snapIndex <= a.PrevLogIndex+n {
		leaderTerm, ok = a.Entries[snapIndex-a.PrevLogIndex-1].Term, true
	}
	if !ok || leaderTerm == snapTerm {
		return nil
	}
	err := fmt.Errorf("%w: snapshot at index %d has term %d, the leader's entry there has term %d",
		ErrUncommittedRestore, snapIndex, snapTerm, leaderTerm)
	r.fatal(err)
	return ErrRaftShutdown
}

// truncateSuffix deletes the conflicting entries [from, last]. A committed entry is never
// deleted: a leader asking for it is broken, and the request is refused.
func (r *Raft) truncateSuffix(from, last uint64) error {
	if from <= r.commitIndex.Load() {
		r.logger.Error("leader asked to overwrite a committed entry; refusing", "index", from)
		return fmt.Errorf("%w: entry %d is committed and cannot be replaced", ErrBadRequest, from)
	}
	r.logger.Warn("truncating conflicting log suffix", "index", from)
	var prevConfig Configuration
	var prevConfigIndex uint64
	if r.configurations.latestIndex >= from {
		var err error
		if prevConfig, prevConfigIndex, err = r.configurationBefore(from); err != nil {
			return err
		}
	}
	r.recent.truncateFrom(from)
	if err := r.logs.DeleteRange(from, last); err != nil {
		r.fatal(fmt.Errorf("raft: truncating log [%d, %d]: %w", from, last, err))
		return ErrRaftShutdown
	}
	prevTerm, err := r.termAt(from - 1)
	if err != nil {
		return err
	}
	r.lastLog.Store(&indexTerm{index: from - 1, term: prevTerm})
	if r.configurations.latestIndex >= from {
		// The latest configuration was cut away: the newest one left in the log takes
		// over. That is not necessarily the committed one: this node may hold several
		// configuration entries past the last one it saw committed (several leaders
		// each appended one, or it restarted and knows of no commit).
		r.setConfigurations(r.configurations.withLatest(prevConfig, prevConfigIndex))
	}
	return nil
}

// termAt returns the term of the entry at index, from the snapshot or the log (the follower's
// store; the leader's replicators read through the term's cache). An entry that should exist
// but cannot be read is a local storage failure.
func (r *Raft) termAt(index uint64) (uint64, error) {
	return r.termVia(index, func(i uint64) (*Log, error) {
		l := new(Log)
		return l, r.logs.GetLog(i, l)
	})
}

// termVia is termAt reading entries with read: the snapshot and the log tail answer for their
// own indexes without a read.
func (r *Raft) termVia(index uint64, read func(uint64) (*Log, error)) (uint64, error) {
	if index == 0 {
		return 0, nil
	}
	if snapIndex, snapTerm := r.snapshotIndexTerm(); index == snapIndex {
		return snapTerm, nil
	}
	if lastIndex, lastTerm := r.lastLogIndexTerm(); index == lastIndex {
		return lastTerm, nil
	}
	l, err := read(index)
	if err != nil {
		return 0, fmt.Errorf("raft: reading entry %d: %w", index, err)
	}
	return l.Term, nil
}

// firstIndexOfTerm finds the first index holding term, searching back from index; terms
// never decrease along the log, so a binary search over [first, index] does it in a few
// reads. Unreadable entries end the search early, which only makes the hint less sharp.
func (r *Raft) firstIndexOfTerm(term, index uint64) uint64 {
	lo, _ := r.snapshotIndexTerm()
	lo++
	if first, err := r.logs.FirstIndex(); err == nil && first > lo {
		lo = first
	}
	hi := index
	for lo < hi {
		mid := lo + (hi-lo)/2
		t, err := r.termAt(mid)
		if err != nil {
			return index
		}
		if t < term {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// noteConfigurationEntries makes the newest configuration among appended entries take effect
// at once.
func (r *Raft) noteConfigurationEntries(entries []*Log) {
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Type != LogConfiguration {
			continue
		}
		c, err := decodeConfigurationEntry(e)
		if err != nil {
			// validateEntries decoded it already; an error here is a broken invariant.
			panic(fmt.Sprintf("raft: %v", err))
		}
		r.setConfigurations(r.configurations.withLatest(c, e.Index))
		return
	}
}

// advanceFollowerCommit moves the commit index forward and hands the newly committed entries
// to the FSM goroutine.
func (r *Raft) advanceFollowerCommit(commit uint64) {
	if commit <= r.commitIndex.Load() {
		return
	}
	r.commitIndex.Store(commit)
	r.maybeConfirmSnapshot(commit)
	r.applyCommitted(commit, nil)
}
