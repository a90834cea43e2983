package raft

// The follower's side of InstallSnapshot: the main loop takes the request and finishes it,
// the install goroutine receives the data and has the FSM restored (Raft paper, Figure 13).

import (
	"fmt"
	"time"
)

// handleInstallSnapshot receives a snapshot from the leader, restores the FSM from it and
// makes the log consistent with it (Raft paper, Figure 13).
func (r *Raft) handleInstallSnapshot(rpc RPC, req *InstallSnapshotRequest) {
	resp := &InstallSnapshotResponse{RPCHeader: r.header(), Term: r.currentTerm.Load()}
	if err := r.checkHeader(req.RPCHeader, &resp.RPCHeader); err != nil {
		rpc.Respond(nil, err)
		return
	}
	// Validate before the term is looked at, as for AppendEntries.
	config, err := validateInstallSnapshot(req)
	if err != nil {
		rpc.Respond(nil, err)
		return
	}
	if req.Term < r.currentTerm.Load() {
		rpc.Respond(resp, nil)
		return
	}
	if err := r.acceptLeader(req.RPCHeader, req.Term); err != nil {
		rpc.Respond(nil, err)
		return
	}
	resp.Term = req.Term
	if r.localRestoreBusy() {
		rpc.Respond(nil, ErrInstallInProgress)
		return
	}
	if r.unconfirmed.index != 0 && r.unconfirmed.contradictedBy(req.LastLogIndex, req.LastLogTerm) {
		r.startReset() // the leader holds a later term at or before our unconfirmed snapshot
	}
	reset := r.resetting()
	if reset {
		if err := r.resetSnapshotRefused(req); err != nil {
			rpc.Respond(nil, err)
			return
		}
	} else if req.LastLogIndex <= r.commitIndex.Load() {
		// We already hold everything it covers, committed.
		resp.Success = true
		rpc.Respond(resp, nil)
		return
	}
	if rpc.Reader == nil {
		rpc.Respond(nil, fmt.Errorf("%w: snapshot without data", ErrBadRequest))
		return
	}
	r.startInstall(rpc, req, config, reset)
}

// installState is a snapshot install in progress on a follower. Main loop only.
type installState struct {
	rpc    RPC
	req    *InstallSnapshotRequest
	config Configuration
	start  time.Time
	// reset says the snapshot replaces an unconfirmed one the leader's log contradicts
	// (resetting): its index may lie below the commit index, which moves back to it.
	reset  bool
	doneCh chan error // buffer 1: the receiving goroutine never blocks on it
}

// installDone is the channel of the install in progress, or nil.
func (r *Raft) installDone() <-chan error {
	if r.install == nil {
		return nil
	}
	return r.install.doneCh
}

// startInstall receives the snapshot and restores the FSM from it on a goroutine, so the
// main loop keeps answering heartbeats for the whole transfer and restore; finishInstall
// makes the log fit the snapshot and answers the leader. Until then the node refuses
// entries, commit indexes and other snapshots (ErrInstallInProgress), hands nothing more to
// the FSM, and starts no election.
func (r *Raft) startInstall(rpc RPC, req *InstallSnapshotRequest, config Configuration, reset bool) {
	st := &installState{rpc: rpc, req: req, config: config, start: time.Now(), reset: reset, doneCh: make(chan error, 1)}
	if !reset && req.LeaderCommitIndex != 0 && req.LastLogIndex > req.LeaderCommitIndex {
		// The leader's uncommitted Restore: fenced until settled, marked before the snapshot
		// becomes visible.
		if err := r.markUnconfirmedSnapshot(req.LastLogIndex, req.LastLogTerm); err != nil {
			r.fatal(err)
			rpc.Respond(nil, err)
			return
		}
	}
	r.install = st
	// Exits once the transfer and the FSM restore ended, or on shutdown.
	r.goFunc(func() { st.doneCh <- r.receiveSnapshot(st) })
}

// receiveSnapshot stores the streamed snapshot and restores the FSM from it, through the FSM
// goroutine after everything handed to it before. The data is streamed into the store, never
// held whole in memory; an interrupted transfer cancels the sink, leaving nothing behind.
// Runs on the install goroutine.
func (r *Raft) receiveSnapshot(st *installState) error {
	req := st.req
	task := &restoreTask{index: req.LastLogIndex, term: req.LastLogTerm,
		configuration: st.config, configurationIndex: req.ConfigurationIndex}
	// The stream does not end with the snapshot: read exactly Size bytes of it.
	src := snapshotSource{data: st.rpc.Reader, size: req.Size}
	id, err := r.streamIntoSnapshot(req.SnapshotVersion, task, src)
	if err != nil {
		return fmt.Errorf("raft: receiving snapshot: %w", err)
	}
	task.id = id
	return r.restoreFSMFrom(task)
}

// finishInstall ends the install in progress on the main loop: after a successful restore it
// makes the log consistent with the snapshot, then answers the leader.
func (r *Raft) finishInstall(err error) {
	st := r.install
	r.install = nil
	if err == nil {
		if st.reset {
			// The FSM holds the leader's committed snapshot now, not the unconfirmed one:
			// the commit index goes back to what is known committed.
			r.commitIndex.Store(st.req.LastLogIndex)
			r.resetTerm = 0
			r.logger.Warn("reset from the leader's snapshot; the unconfirmed snapshot is discarded",
				"index", st.req.LastLogIndex, "term", st.req.LastLogTerm, "discarded", r.unconfirmed.index)
		}
		err = r.installSnapshot(st.req, st.config)
	}
	if err != nil {
		r.logger.Error("installing snapshot failed", "index", st.req.LastLogIndex, "error", err)
		if snapIndex, _ := r.snapshotIndexTerm(); r.unconfirmed.index != 0 && r.unconfirmed.index != snapIndex && !r.stopping() {
			r.confirmSnapshot() // the marked snapshot was never adopted: drop the mark
		}
		st.rpc.Respond(nil, err)
		return
	}
	if r.unconfirmed != (indexTerm{index: st.req.LastLogIndex, term: st.req.LastLogTerm}) {
		r.confirmSnapshot() // a committed snapshot replaced an unconfirmed one
	}
	snapshotInstallMetric(st.start)
	r.touchContact()
	// The snapshot holds the leader's log through its index.
	if !r.learnCatchUpTarget(st.req.LastLogIndex, 0) || !r.liftCatchUpFence(st.req.LastLogIndex) {
		st.rpc.Respond(nil, ErrRaftShutdown)
		return
	}
	st.rpc.Respond(&InstallSnapshotResponse{RPCHeader: r.header(), Term: r.currentTerm.Load(), Success: true}, nil)
}

func validateInstallSnapshot(req *InstallSnapshotRequest) (Configuration, error) {
	switch {
	case req.Size < 0:
		return Configuration{}, fmt.Errorf("%w: negative snapshot size %d", ErrBadRequest, req.Size)
	case req.LastLogIndex == 0 || req.LastLogTerm == 0 || req.LastLogTerm > req.Term:
		return Configuration{}, fmt.Errorf("%w: snapshot at index %d term %d", ErrBadRequest, req.LastLogIndex, req.LastLogTerm)
	case req.SnapshotVersion != SnapshotVersion:
		return Configuration{}, fmt.Errorf("%w: snapshot version %d", ErrBadRequest, req.SnapshotVersion)
	case req.ConfigurationIndex > req.LastLogIndex:
		return Configuration{}, fmt.Errorf("%w: configuration index %d past the snapshot", ErrBadRequest, req.ConfigurationIndex)
	}
	c, err := decodeConfiguration(req.Configuration)
	if err != nil {
		return Configuration{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return c, nil
}

// installSnapshot makes the log, the commit index and the configuration consistent with a
// snapshot the FSM was just restored from. Main loop only.
func (r *Raft) installSnapshot(req *InstallSnapshotRequest, config Configuration) error {
	// No lock against a concurrent compaction: see compactLogs.
	if err := r.discardLogBehind(req.LastLogIndex, req.LastLogTerm); err != nil {
		r.fatal(err)
		return err
	}
	r.moveToSnapshot(req.LastLogIndex, req.LastLogTerm, config, req.ConfigurationIndex)
	r.commitIndex.Store(max(r.commitIndex.Load(), req.LastLogIndex))
	if err := r.rescanConfigurations(req.LastLogIndex + 1); err != nil {
		r.fatal(err)
		return err
	}
	r.logger.Info("installed snapshot", "index", req.LastLogIndex, "term", req.LastLogTerm)
	return nil
}

// discardLogBehind keeps the entries after the snapshot only when the log holds the
// snapshot's last entry with the same term; otherwise the whole log goes (Raft paper, Figure
// 13, steps 6 and 7), so the node can never fall back into asking for the same snapshot.
func (r *Raft) discardLogBehind(index, term uint64) error {
	first, err := r.logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft: reading first index: %w", err)
	}
	lastIndex, _ := r.lastLogIndexTerm()
	keep := false
	if index < lastIndex {
		var l Log
		if err := r.logs.GetLog(index, &l); err == nil && l.Term == term {
			keep = true
		}
	}
	if first == 0 {
		r.lastLog.Store(&indexTerm{index: index, term: term})
		return nil
	}
	if keep {
		return r.logs.DeleteRange(first, index)
	}
	r.recent.truncateFrom(0)
	if err := r.logs.DeleteRange(first, max(lastIndex, first)); err != nil {
		return fmt.Errorf("raft: discarding log: %w", err)
	}
	r.lastLog.Store(&indexTerm{index: index, term: term})
	return nil
}
