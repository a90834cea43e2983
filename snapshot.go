package raft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// SnapshotVersion is the snapshot format version this build writes and understands.
const SnapshotVersion = 1

// SnapshotMeta describes a stored snapshot.
type SnapshotMeta struct {
	// Version is the SnapshotVersion it was written with.
	Version int
	// ID is the store's name for the snapshot.
	ID string
	// Index and Term are those of the last log entry the snapshot includes.
	Index uint64
	Term  uint64
	// Configuration is the latest configuration as of Index, and ConfigurationIndex the index
	// of the entry that carried it.
	Configuration      Configuration
	ConfigurationIndex uint64
	// Size is the size of the snapshot data in bytes.
	Size int64
}

// SnapshotStore stores FSM snapshots. Implementations must be safe for concurrent use: the
// snapshot goroutine writes while the main loop and replication goroutines list and read.
type SnapshotStore interface {
	// Create starts a new snapshot. The data is written to the returned sink; the snapshot
	// becomes visible to List and Open only once the sink is closed successfully.
	Create(version int, index, term uint64, configuration Configuration, configurationIndex uint64) (SnapshotSink, error)

	// List returns the metadata of the stored snapshots, newest first.
	List() ([]*SnapshotMeta, error)

	// Open returns the metadata and a reader of the named snapshot. The caller closes the
	// reader. A snapshot whose data fails its integrity check returns an error.
	Open(id string) (*SnapshotMeta, io.ReadCloser, error)
}

// SnapshotSink receives the data of a snapshot being created.
type SnapshotSink interface {
	io.WriteCloser
	// ID returns the ID the snapshot will have.
	ID() string
	// Cancel abandons the snapshot and removes what was written.
	Cancel() error
}

// userSnapshotFuture is returned by Raft.Snapshot.
type userSnapshotFuture struct {
	deferError
	r  *Raft
	id string // written before respond
}

// Open implements SnapshotFuture.
func (u *userSnapshotFuture) Open() (*SnapshotMeta, io.ReadCloser, error) {
	if err := u.Error(); err != nil {
		return nil, nil, err
	}
	return u.r.snaps.Open(u.id)
}

// Snapshot takes a snapshot now, whatever the threshold, and compacts the log. It fails with
// ErrNothingNewToSnapshot when nothing was applied since the last one.
func (r *Raft) Snapshot() SnapshotFuture { return r.snapshotRequest(context.Background()) }

// SnapshotContext is Snapshot bounded by ctx. When ctx ends first, Error (and Open) return
// an error matching ctx.Err() and ErrEnqueueTimeout (the snapshot goroutine never took the
// request: no snapshot is taken) or ErrTimeout (it took it: the snapshot may still complete,
// and compact the log).
func (r *Raft) SnapshotContext(ctx context.Context) SnapshotFuture { return r.snapshotRequest(ctx) }

func (r *Raft) snapshotRequest(ctx context.Context) SnapshotFuture {
	f := &userSnapshotFuture{r: r}
	f.init()
	f.shutdownCh = r.shutdownCh
	f.ctx = ctx
	f.enqueued.Store(true)
	if err := handOff(r.userSnapshotCh, f, time.Time{}, ctx, r.shutdownCh); err != nil {
		return errorFuture{err}
	}
	return f
}

// runSnapshots is the snapshot goroutine: every SnapshotInterval (plus jitter) it snapshots
// when SnapshotThreshold entries were applied since the last snapshot, and it serves
// Snapshot calls. It exits on shutdown.
func (r *Raft) runSnapshots() {
	rng := r.snapshotRng
	for {
		timer := time.NewTimer(r.conf.SnapshotInterval + time.Duration(rng.Int63n(int64(r.conf.SnapshotInterval))))
		select {
		case <-timer.C:
			applied, _ := r.appliedIndexTerm()
			snapIndex, _ := r.snapshotIndexTerm()
			if applied-snapIndex < r.conf.SnapshotThreshold {
				continue
			}
			if _, err := r.takeSnapshot(); err != nil && !errors.Is(err, ErrNothingNewToSnapshot) {
				r.logger.Error("taking snapshot failed", "error", err)
			}
		case f := <-r.userSnapshotCh:
			timer.Stop()
			id, err := r.takeSnapshot()
			f.id = id
			f.respond(err)
		case <-r.shutdownCh:
			timer.Stop()
			return
		}
	}
}

// takeSnapshot asks the FSM goroutine for a point-in-time snapshot, persists it while the FSM
// keeps applying, then compacts the log behind it.
func (r *Raft) takeSnapshot() (string, error) {
	req := &fsmSnapshotRequest{done: make(chan fsmSnapshotResult, 1)}
	select {
	case r.fsmSnapshotCh <- req:
	case <-r.shutdownCh:
		return "", ErrRaftShutdown
	}
	var res fsmSnapshotResult
	select {
	case res = <-req.done:
	case <-r.shutdownCh:
		return "", ErrRaftShutdown
	}
	if res.err != nil {
		return "", res.err
	}
	defer res.snapshot.Release()
	start := time.Now()
	sink, err := r.snaps.Create(SnapshotVersion, res.index, res.term, res.configuration, res.configurationIndex)
	if err != nil {
		return "", fmt.Errorf("raft: creating snapshot: %w", err)
	}
	if err := res.snapshot.Persist(sink); err != nil {
		_ = sink.Cancel()
		return "", fmt.Errorf("raft: persisting snapshot: %w", err)
	}
	snapshotPersistMetric(start)
	r.logger.Info("snapshot complete", "index", res.index, "term", res.term)

	if !r.snapshot.CompareAndSwap(res.base, &indexTerm{index: res.index, term: res.term}) {
		// The main loop replaced the node's snapshot meanwhile (see compactLogs): this one
		// is superseded, and there is nothing to compact behind it.
		r.logger.Info("snapshot superseded while it was persisted: not compacting", "index", res.index)
		return sink.ID(), nil
	}
	if err := r.compactLogs(res.index); err != nil {
		return sink.ID(), err
	}
	return sink.ID(), nil
}

// compactLogs deletes the log up to snapIndex, keeping TrailingLogs entries behind it so
// slightly lagging followers still catch up from the log. Runs on the snapshot goroutine,
// right after it published snapIndex as the node's snapshot.
//
// The snapshot goroutine takes no lock against the main loop, which may replace the node's
// snapshot and whole log meanwhile: a follower installing a leader's snapshot, a leader's
// Restore, a node resetting an unconfirmed snapshot from its leader (installSnapshot,
// adoptRestoredSnapshot, finishInstall). The main loop never waits for a compaction, whose
// DeleteRange can take as long as the disk makes it (a lock held across it stalled heartbeats
// and appends, and froze synctest bubbles, where a goroutine waiting for a mutex is not
// durably blocked). This is safe because:
//   - The snapshot index has two writers. The main loop stores the snapshot it installs or
//     restores. The snapshot goroutine publishes its own with a compare-and-swap against the
//     snapshot the node had when the FSM snapshot was taken (fsmSnapshotResult.base): if the
//     main loop replaced it in between, the goroutine's snapshot is superseded (it covers a
//     state at or before the replacement, or one a reset discarded) and neither moves the
//     index nor compacts. So the index never goes back to a stale snapshot.
//   - Compaction deletes at or below upTo = min(snapIndex, commit index) - TrailingLogs, with
//     the commit index read after the snapshot was published. A replacement puts its snapshot
//     at an index S and writes only entries above S. A leader's Restore and a reset drop the
//     whole log; an install reads the log's entry at S to keep the entries after it if they
//     match (discardLogBehind), and is accepted only above the commit index, which stays
//     below S until the log was replaced: so upTo < S, and the compaction deletes neither
//     entry S nor anything the install keeps or writes. A reset moves the commit index to S
//     first; a compaction that reads it then may delete entry S (with TrailingLogs 0), and
//     the node then discards its whole log instead of keeping the entries after S, which is
//     safe there: a resetting node acknowledged nothing in its leader's term, so no leader
//     counts it for them.
//   - The first index read here may be stale by the time DeleteRange runs (the main loop
//     deleted the old log): DeleteRange ignores the part of a range that lies outside the log
//     (see LogStore), so the late call deletes what is left of the old log below upTo, or
//     nothing.
func (r *Raft) compactLogs(snapIndex uint64) error {
	limit := min(snapIndex, r.commitIndex.Load()) // the min matters only during an install: see above
	if limit <= r.conf.TrailingLogs {
		return nil
	}
	first, err := r.logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft: compaction: reading first index: %w", err)
	}
	upTo := limit - r.conf.TrailingLogs
	if first == 0 || upTo < first {
		return nil
	}
	if err := r.logs.DeleteRange(first, upTo); err != nil {
		return fmt.Errorf("raft: compacting log [%d, %d]: %w", first, upTo, err)
	}
	r.logger.Info("compacted log", "index", upTo)
	return nil
}

// adoptSnapshot makes a restored snapshot the node's starting point.
func (r *Raft) adoptSnapshot(meta *SnapshotMeta) {
	it := &indexTerm{index: meta.Index, term: meta.Term}
	r.snapshot.Store(it)
	r.applied.Store(it)
	r.fsmConfig, r.fsmConfigIndex = meta.Configuration.Clone(), meta.ConfigurationIndex
	r.commitIndex.Store(meta.Index)
	r.fsmQueuedIndex = meta.Index
	r.setConfigurations(snapshotConfigurations(meta.Configuration, meta.ConfigurationIndex))
}

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
	sink, err := r.snaps.Create(req.SnapshotVersion, req.LastLogIndex, req.LastLogTerm, st.config, req.ConfigurationIndex)
	if err != nil {
		return fmt.Errorf("raft: creating snapshot: %w", err)
	}
	n, err := io.Copy(sink, io.LimitReader(st.rpc.Reader, req.Size))
	if err == nil && n != req.Size {
		err = fmt.Errorf("raft: snapshot stream ended after %d of %d bytes", n, req.Size)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("raft: receiving snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("raft: closing snapshot: %w", err)
	}
	task := &restoreTask{id: sink.ID(), index: req.LastLogIndex, term: req.LastLogTerm,
		configuration: st.config, configurationIndex: req.ConfigurationIndex, done: make(chan error, 1)}
	r.fsmq.push(fsmTask{restore: task})
	select {
	case err = <-task.done:
	case <-r.shutdownCh:
		return ErrRaftShutdown
	}
	if err != nil {
		// The FSM may be half restored: this node cannot go on.
		r.fatal(err)
		return err
	}
	return nil
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
	r.snapshot.Store(&indexTerm{index: req.LastLogIndex, term: req.LastLogTerm})
	r.fsmQueuedIndex = req.LastLogIndex
	r.setConfigurations(snapshotConfigurations(config, req.ConfigurationIndex))
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

// snapshotWarnInterval spaces the WARN lines of a peer that keeps refusing or failing
// snapshots; the retries in between log at DEBUG.
const snapshotWarnInterval = 30 * time.Second

// logSnapshotFailure logs a failed snapshot send at WARN at most once per
// snapshotWarnInterval (the retries come every backoff), at DEBUG otherwise.
func (s *replicator) logSnapshotFailure(peer ServerID, index uint64, err error, now time.Time) {
	if now.Sub(s.snapshotWarned) >= snapshotWarnInterval {
		s.r.logger.Warn("sending snapshot failed", "peer", string(peer), "index", index, "failures", s.failures, "error", err)
		s.snapshotWarned = now
		return
	}
	s.r.logger.Debug("sending snapshot failed", "peer", string(peer), "index", index, "failures", s.failures, "error", err)
}

// sendLatestSnapshot sends the newest snapshot to the peer (for a peer to reset, one newer
// than its unconfirmed snapshot: see snapshotToSend); false when the replicator should stop.
func (s *replicator) sendLatestSnapshot() bool {
	peer := s.peer.Load()
	version := s.ls.logVersion.Load()
	latest, err := s.snapshotToSend()
	if err != nil {
		s.r.logger.Error("peer needs a snapshot but none can be sent", "peer", string(peer.ID), "error", err)
		s.failures++
		return s.wait(s.backoff())
	}
	meta, rc, err := s.r.snaps.Open(latest.ID)
	if err != nil {
		s.r.logger.Error("opening snapshot to send failed", "peer", string(peer.ID), "error", err)
		s.failures++
		return s.wait(s.backoff())
	}
	defer rc.Close()
	if s.ls.logVersion.Load() != version {
		// The node left its term (it may have installed another leader's snapshot since)
		// or restored one: what was opened is not this term's view.
		return !s.stopped()
	}
	req := &InstallSnapshotRequest{
		RPCHeader:          s.r.header(),
		SnapshotVersion:    meta.Version,
		Term:               s.ls.term,
		LastLogIndex:       meta.Index,
		LastLogTerm:        meta.Term,
		Configuration:      encodeConfiguration(meta.Configuration),
		ConfigurationIndex: meta.ConfigurationIndex,
		Size:               meta.Size,
		LeaderCommitIndex:  s.r.commitIndex.Load(),
	}
	var resp InstallSnapshotResponse
	start := time.Now()
	data := &sendingReader{r: rc, remaining: meta.Size, progress: newSnapshotProgress(peer.ID, meta.Size)}
	if err := s.r.trans.InstallSnapshot(peer.ID, peer.Address, req, &resp, data); err != nil {
		s.failures++
		s.logSnapshotFailure(peer.ID, meta.Index, err, time.Now())
		return s.wait(s.backoff())
	}
	rpcMetric("install_snapshot", peer.ID, start)
	if resp.Term > s.ls.term {
		s.notifyStepDown(resp.Term)
		return false
	}
	s.setContact()
	if !resp.Success {
		s.failures++
		return s.wait(s.backoff())
	}
	s.noteSuccess()
	s.snapshotWarned = time.Time{}
	s.resetAbove = indexTerm{}
	s.advanceMatch(meta.Index)
	s.nextIndex = meta.Index + 1
	s.r.logger.Info("snapshot installed on peer", "peer", string(peer.ID), "index", meta.Index)
	return true
}

// snapshotToSend returns the snapshot to send the peer: the newest one, or for a peer that
// asked to be reset (resetAbove), a committed one newer than the peer's unconfirmed snapshot,
// taken first when the newest is not. A leader that has not applied an entry newer than that
// snapshot yet (its first entry of the term is not committed) has none to give: an error,
// and the replicator retries after its backoff.
func (s *replicator) snapshotToSend() (*SnapshotMeta, error) {
	metas, err := s.r.listSnapshots()
	if err != nil {
		return nil, err
	}
	if s.resetAbove.index != 0 && (len(metas) == 0 || !s.resetsPeer(metas[0])) {
		if err := s.snapshotForReset(); err != nil {
			return nil, err
		}
		if metas, err = s.r.listSnapshots(); err != nil {
			return nil, err
		}
	}
	if len(metas) == 0 {
		return nil, errors.New("raft: no snapshot stored")
	}
	if s.resetAbove.index != 0 && !s.resetsPeer(metas[0]) {
		return nil, fmt.Errorf("raft: the newest snapshot (index %d, term %d) cannot reset the peer's unconfirmed one (index %d, term %d) yet",
			metas[0].Index, metas[0].Term, s.resetAbove.index, s.resetAbove.term)
	}
	return metas[0], nil
}

// resetsPeer reports whether m can replace the peer's unconfirmed snapshot: committed, and
// newer than it.
func (s *replicator) resetsPeer(m *SnapshotMeta) bool {
	return indexTerm{index: m.Index, term: m.Term}.newerThan(s.resetAbove) && m.Index <= s.r.commitIndex.Load()
}

// snapshotForReset takes a snapshot for a peer to reset, once this leader applied an entry
// newer than the peer's unconfirmed snapshot. It gives up when the replicator stops.
func (s *replicator) snapshotForReset() error {
	if applied, term := s.r.appliedIndexTerm(); !(indexTerm{index: applied, term: term}).newerThan(s.resetAbove) {
		return fmt.Errorf("raft: applied entry %d (term %d) is not newer than the peer's unconfirmed snapshot at %d (term %d) yet",
			applied, term, s.resetAbove.index, s.resetAbove.term)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Exits when the snapshot is done or the replicator stops, whichever is first.
	s.r.goFunc(func() {
		select {
		case <-ctx.Done():
		case <-s.ls.stopCh:
		case <-s.stopCh:
		case <-s.r.shutdownCh:
		}
		cancel()
	})
	if err := s.r.SnapshotContext(ctx).Error(); err != nil && !errors.Is(err, ErrNothingNewToSnapshot) {
		return fmt.Errorf("raft: taking a snapshot to reset the peer: %w", err)
	}
	return nil
}
