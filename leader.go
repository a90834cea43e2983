package raft

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// leaderState is everything that exists only while this node leads one term. It is created by
// runLeader and torn down by leaderCleanup, both on the main loop.
type leaderState struct {
	term uint64

	// commitCh is poked by the commitment when the commit index moves (buffer 1, coalescing).
	commitCh   chan struct{}
	commitment *commitment

	// inflight holds this term's entries from dispatch until they are handed to the FSM
	// goroutine, in index order. Main loop only.
	inflight []*logFuture

	// replicators by peer; main loop only.
	replicators map[ServerID]*replicator

	// verifies awaiting a quorum of heartbeats; failed on cleanup. Main loop only.
	verifies []*verifyFuture

	// stepDownCh carries a higher term seen by a replication or heartbeat goroutine (buffer
	// 1: one pending report is enough to make the main loop step down).
	stepDownCh chan uint64

	// ctx is done when leaderCleanup ends the term or the node stops (a child of r.ctx);
	// every goroutine of this term exits on it, each replicator through its own child.
	ctx  context.Context
	stop context.CancelFunc

	// logVersion is bumped by the main loop before it changes the log in any way other than
	// appending this term's entries: at step-down (before the follower code can truncate or
	// append another leader's entries) and when a Restore replaces the log. Replication
	// validates every request it built against it (see buildRequest).
	logVersion atomic.Uint64

	// cache holds this term's recent entries so replication can send them before (and while)
	// the local write completes.
	cache *logCache

	// writer persists the term's entries; see logWriter for its failure policy.
	writer *logWriter
	// unwritten holds this term's futures whose entries are not written locally yet, in
	// index order, for the written-stage metric. Main loop only.
	unwritten []*logFuture
	// uncommittedBytes is the entryBytes of inflight. Main loop only.
	uncommittedBytes int

	// Membership changes waiting their turn and the AddVoter waiting for its server to catch
	// up. Main loop only.
	configQueue []*configChangeFuture
	promotion   *promotion

	// reads batches reads into confirmation rounds and keeps the lease (read.go).
	reads leaderReads
}

// maxPendingWrites bounds the dispatched entries waiting for the local writer; past it the
// leader stops taking applies until the disk catches up (backpressure instead of memory).
func (r *Raft) maxPendingWrites() int { return 4 * r.conf.MaxAppendEntries }

// maxUncommittedBytes bounds the leader's entries not yet committed: past it the leader stops
// taking applies until a quorum catches up, so a slow quorum costs clients latency (and
// ErrEnqueueTimeout) rather than the leader memory.
func (r *Raft) maxUncommittedBytes() int { return 4 * r.conf.MaxInflightBytes }

// runLeader leads one term: it sets up replication, appends the term's no-op entry and
// serves requests until it steps down or shuts down.
func (r *Raft) runLeader() {
	term := r.currentTerm.Load()
	r.logger.Info("entering leader state", "term", term)
	r.setupLeaderState(term)
	defer func() {
		if r.leaderState != nil {
			r.leaderCleanup(ErrRaftShutdown)
		}
	}()
	// The no-op commits every entry of earlier terms with it (Raft paper, section 8).
	noop := r.newLogFuture(Log{Type: LogNoop}, 0, nil)
	r.dispatchLogs([]*logFuture{noop})

	tick := time.NewTicker(max(r.conf.LeaderLeaseTimeout/4, time.Millisecond))
	defer tick.Stop()
	for r.getState() == Leader && r.leaderState != nil {
		ls := r.leaderState
		applyCh := r.applyCh
		if ls.writer.backlogged() || ls.uncommittedBytes >= r.maxUncommittedBytes() || r.fsmQueuedIndex < r.commitIndex.Load() {
			// Backpressure: the disk is behind, a quorum of followers is (too many bytes not
			// committed yet), or the FSM is (committed entries wait for room in its queue).
			// Callers wait in Apply, up to their timeout.
			applyCh = nil
		}
		reqCh := r.leaderReqCh
		if r.restoring != nil {
			// Nothing new while a Restore runs: see leaderRestore.
			applyCh, reqCh = nil, nil
		}
		select {
		case rpc := <-r.rpcCh:
			r.processRPC(rpc)
		case f := <-applyCh:
			r.handleApply(f)
		case err := <-r.restoreDone():
			r.restoreStepDone(err)
		case res := <-ls.writer.done():
			r.handleWriteDone(res)
		case <-ls.commitCh:
			r.processLeaderCommits()
		case <-r.fsmq.room:
			r.processLeaderCommits()
		case t := <-ls.stepDownCh:
			r.logger.Info("newer term seen by replication, stepping down", "term", t)
			r.stepDown(t, ErrLeadershipLost)
		case <-tick.C:
			r.leaderTick()
		case req := <-reqCh:
			req.serve(r)
		case err := <-r.transferResult():
			r.handleTransferResult(err)
		case b := <-r.bootstrapCh:
			b.respond(ErrCantBootstrap)
		case <-r.shutdownCh:
			return
		}
	}
}

// setupLeaderState creates this term's state and starts the writer and one replicator per
// peer.
func (r *Raft) setupLeaderState(term uint64) {
	lastIndex, _ := r.lastLogIndexTerm()
	ls := &leaderState{
		term:        term,
		commitCh:    make(chan struct{}, 1),
		replicators: make(map[ServerID]*replicator),
		stepDownCh:  make(chan uint64, 1),
		// Entries not yet written locally always stay (the writer's backlog bounds them);
		// written ones up to two full requests, so followers that keep up are served from
		// memory.
		cache: newLogCache(2 * r.conf.MaxAppendEntriesBytes),
	}
	ls.ctx, ls.stop = context.WithCancel(r.ctx)
	r.settleTransfer(r.localID) // one of an earlier term: this node won instead of its target
	r.recent.truncateFrom(0)    // a follower's cache; the leader reads through ls.cache
	// The term's first entry is the no-op at lastIndex+1: nothing before it is committed by
	// counting replicas (Figure 8).
	ls.commitment = newCommitment(ls.commitCh, r.configurations.latest.voters(), lastIndex+1)
	ls.reads.start(r.monoNow())
	r.leaderState = ls
	ls.writer = newLogWriter(r) // its goroutine exits when leaderCleanup stops it, or on shutdown
	r.startStopReplication()
}

// startStopReplication starts a replicator for every peer of the latest configuration that
// has none and stops those of peers no longer in it.
func (r *Raft) startStopReplication() {
	ls := r.leaderState
	lastIndex, _ := r.lastLogIndexTerm()
	inConfig := make(map[ServerID]bool)
	// A server removed by an uncommitted configuration keeps receiving the log until the
	// removal committed, so it learns of its removal and stops campaigning.
	servers := append([]Server(nil), r.configurations.latest.Servers...)
	for _, s := range r.configurations.committed.Servers {
		if _, ok := r.configurations.latest.server(s.ID); !ok {
			servers = append(servers, s)
		}
	}
	for _, s := range servers {
		inConfig[s.ID] = true
		if s.ID == r.localID {
			continue
		}
		if repl, ok := ls.replicators[s.ID]; ok {
			repl.setPeer(s)
			continue
		}
		repl := newReplicator(r, ls, s, lastIndex+1)
		ls.replicators[s.ID] = repl
		r.goFunc(repl.run)       // exits once repl.done is closed
		r.goFunc(repl.heartbeat) // likewise
		r.logger.Info("added peer, starting replication", "peer", string(s.ID))
		r.observe(PeerObservation{Peer: s})
	}
	for id, repl := range ls.replicators {
		if !inConfig[id] {
			repl.stop()
			delete(ls.replicators, id)
			r.logger.Info("removed peer, stopping replication", "peer", string(id))
			r.observe(PeerObservation{Removed: true, Peer: *repl.peer.Load()})
		}
	}
	ls.commitment.setVoters(r.configurations.latest.voters())
	// Acknowledgements from before a membership change do not count for the lease.
	r.resetLease()
}

// handleApply drains the apply queue into one batch (group commit) and dispatches it. The
// batch holds at most MaxAppendEntries entries and MaxAppendEntriesBytes plus one entry.
func (r *Raft) handleApply(first *logFuture) {
	if r.transfer != nil {
		first.respond(ErrLeadershipTransferInProgress)
		return
	}
	// The batch takes whatever is queued, up to MaxAppendEntries entries or until it holds
	// MaxAppendEntriesBytes: one entry alone at low load (no added latency), large batches
	// under load.
	batch := []*logFuture{first}
	bytes := entryBytes(&first.log)
drain:
	for len(batch) < r.conf.MaxAppendEntries && bytes < r.conf.MaxAppendEntriesBytes {
		select {
		case f := <-r.applyCh:
			batch = append(batch, f)
			bytes += entryBytes(&f.log)
		default:
			break drain
		}
	}
	r.dispatchLogs(batch)
}

// dispatchLogs gives entries their term and index, makes them visible to replication at once
// and queues them for the local write; the leader counts itself only once the write is
// durable.
func (r *Raft) dispatchLogs(futures []*logFuture) {
	ls := r.leaderState
	now := time.Now()
	lastIndex, _ := r.lastLogIndexTerm()
	logs := make([]*Log, len(futures))
	for i, f := range futures {
		lastIndex++
		f.log.Index, f.log.Term = lastIndex, ls.term
		f.dispatched = now
		logs[i] = &f.log
		stageMetric(stageQueued, f.created, now)
	}
	ls.inflight = append(ls.inflight, futures...)
	for _, f := range futures {
		ls.uncommittedBytes += entryBytes(&f.log)
	}
	ls.unwritten = append(ls.unwritten, futures...)
	ls.cache.add(logs)
	r.lastLog.Store(&indexTerm{index: lastIndex, term: ls.term})
	dispatchMetric(len(logs))
	ls.writer.submit(logs)
	for _, repl := range ls.replicators {
		repl.trigger()
	}
}

// handleWriteDone counts the leader's own durable progress, or applies the writer's failure
// policy.
func (r *Raft) handleWriteDone(res writeResult) {
	ls := r.leaderState
	index, err := ls.writer.finish(res)
	if r.writeOutcome(index, err) == nil {
		ls.cache.markDurable(index)
		ls.noteWritten(index, time.Now())
		ls.writer.kick()
	}
}

// noteWritten records the written stage of the futures whose entries the local write up to
// last made durable.
func (ls *leaderState) noteWritten(last uint64, now time.Time) {
	n := 0
	for n < len(ls.unwritten) && ls.unwritten[n].log.Index <= last {
		stageMetric(stageWritten, ls.unwritten[n].dispatched, now)
		n++
	}
	clear(ls.unwritten[:n]) // the futures may be gone long before the slice is reallocated
	ls.unwritten = ls.unwritten[n:]
}

// writeOutcome applies the writer's failure policy (see logWriter) to the outcome of a wait
// on it: a durable index is counted for the leader; ErrLogStoreTimeout steps down; any other
// write error stops the node. It returns nil while this node still leads, else the error
// its waiting requests got.
func (r *Raft) writeOutcome(index uint64, err error) error {
	switch {
	case err == nil:
		if index > 0 {
			r.leaderState.commitment.match(r.localID, index)
		}
		return nil
	case errors.Is(err, ErrRaftShutdown):
		return err
	case errors.Is(err, ErrLogStoreTimeout):
		r.logger.Error("local log write exceeded the log store timeout, stepping down", "error", err)
		cause := fmt.Errorf("%w: %w", ErrLeadershipLost, ErrLogStoreTimeout)
		r.stepDown(r.currentTerm.Load(), cause)
		return cause
	default:
		r.fatal(err)
		cause := fmt.Errorf("%w: %w", ErrRaftShutdown, err)
		if r.leaderState != nil {
			r.leaderCleanup(cause)
		}
		return cause
	}
}

// processLeaderCommits hands newly committed entries, with their futures, to the FSM.
func (r *Raft) processLeaderCommits() {
	ls := r.leaderState
	commit := ls.commitment.getCommitIndex()
	prev := r.commitIndex.Load()
	if commit <= prev && r.fsmQueuedIndex >= prev {
		return // nothing newly committed, nothing held back for the FSM
	}
	configCommitted := r.configurations.committedIndex
	if commit > prev {
		r.commitIndex.Store(commit)
		now := time.Now()
		for _, f := range ls.inflight {
			if f.log.Index > commit {
				break
			}
			if f.log.Index > prev {
				f.committed = now
				ls.uncommittedBytes -= entryBytes(&f.log)
				commitTimeMetric(f.dispatched)
				stageMetric(stageCommitted, f.dispatched, now)
			}
		}
	}
	r.maybeConfirmSnapshot(r.commitIndex.Load())
	n := r.applyCommitted(r.commitIndex.Load(), ls.inflight)
	ls.inflight = ls.inflight[n:]
	if r.configurations.committedIndex != configCommitted {
		r.startStopReplication()
	}
	r.maybeStartConfigChange()
	r.progressTransfer()
	if r.restoring == nil {
		r.maybeStartReadRound() // reads queued before the term's first commit wait for it
	}
	if r.configurations.committedIndex == r.configurations.latestIndex && !r.configurations.latest.isVoter(r.localID) {
		r.logger.Info("removed from the configuration, stepping down")
		r.stepDown(r.currentTerm.Load(), ErrLeadershipLost)
	}
}

// leaderTick runs the leader's periodic checks, every LeaderLeaseTimeout/4: two that may end
// the term (the local disk stuck in a write, a quorum out of touch), then two that wait on
// followers' progress the main loop is not told of (a promotion's catch-up, a transfer's
// target catching up) or on time (a transfer's deadline).
func (r *Raft) leaderTick() {
	if r.checkDiskStall() || r.checkQuorumContact() {
		return // stepped down
	}
	r.maybeStartConfigChange()
	r.progressTransfer()
}

// checkDiskStall steps down when the local disk has been stuck in a write for longer than
// LogStoreTimeout; true when it did.
func (r *Raft) checkDiskStall() bool {
	if !r.leaderState.writer.overdue(time.Now()) {
		return false
	}
	_ = r.writeOutcome(0, ErrLogStoreTimeout)
	return true
}

// checkQuorumContact steps down when no quorum of voters was heard from within
// LeaderLeaseTimeout (check-quorum: a leader cut off from the majority stops acting as one);
// true when it did.
func (r *Raft) checkQuorumContact() bool {
	ls := r.leaderState
	contacted := 0
	for _, s := range r.configurations.latest.Servers {
		if s.Suffrage != Voter {
			continue
		}
		if s.ID == r.localID {
			contacted++
			continue
		}
		if repl, ok := ls.replicators[s.ID]; ok && repl.sinceContact() <= r.conf.LeaderLeaseTimeout {
			contacted++
		}
	}
	if contacted >= r.configurations.latest.quorumSize() {
		return false
	}
	r.logger.Warn("failed to contact a quorum within the leader lease, stepping down", "term", ls.term)
	r.stepDown(r.currentTerm.Load(), ErrLeadershipLost)
	return true
}

// handleVerify asks every voter for a fresh heartbeat acknowledgement.
func (r *Raft) handleVerify(v *verifyFuture) {
	ls := r.leaderState
	v.quorum = r.configurations.latest.quorumSize()
	live := ls.verifies[:0]
	for _, old := range ls.verifies {
		select {
		case <-old.done:
		default:
			live = append(live, old)
		}
	}
	ls.verifies = append(live, v)
	if r.configurations.latest.isVoter(r.localID) {
		v.vote(r.localID)
	}
	for _, s := range r.configurations.latest.Servers {
		if repl, ok := ls.replicators[s.ID]; ok && s.Suffrage == Voter {
			repl.addVerify(v)
		}
	}
}

// leaderCleanup ends this node's leadership: it fences the term's replication, fails every
// request still waiting with err, writes every entry it dispatched and stops the log writer,
// so no write of the old term races with follower-side log changes, and reloads the log tail
// from the store.
//
// Replication and heartbeat goroutines are fenced rather than waited for (waiting would tie
// the main loop to a peer's network timeout): ending ls.ctx ends them at their next step,
// and bumping logVersion, before anything below or after it can change the log, makes every
// request they were building meanwhile fail its validation. A request validated earlier may
// still be in flight; it is a consistent piece of this term's log, i.e. a delayed message of
// the old term, which Raft tolerates.
func (r *Raft) leaderCleanup(err error) {
	ls := r.leaderState
	r.leaderState = nil
	ls.stop()
	ls.logVersion.Add(1)
	// The role changes before any caller hears ErrLeadershipLost, so a caller that then asks
	// State or Leader never sees this node still leading.
	if l := r.leader.Load(); l.id == r.localID {
		r.setLeader("", "")
	}
	if r.getState() == Leader {
		r.setState(Follower)
	}
	for _, f := range ls.inflight {
		f.respond(err)
	}
	for _, v := range ls.verifies {
		v.respond(err)
	}
	r.endReads(ls, err)
	for _, f := range ls.configQueue {
		f.respond(err)
	}
	if ls.promotion != nil {
		ls.promotion.future.respond(err)
	}
	r.endTransfer()
	// Followers may have committed entries the leader had not written yet, and this node
	// may have applied them: its log must never end before what it applied, or it would
	// have a gap once a new leader's entries follow. So the writer writes everything first.
	if werr := ls.writer.stop(); werr != nil {
		if !errors.Is(werr, ErrRaftShutdown) {
			r.fatal(fmt.Errorf("raft: writing the log at step-down: %w", werr))
		}
		return
	}
	if lerr := r.loadLastLog(); lerr != nil {
		r.fatal(lerr)
		return
	}
	if last, _ := r.lastLogIndexTerm(); r.configurations.latestIndex > last {
		r.setConfigurations(r.configurations.withLatest(r.configurations.committed, r.configurations.committedIndex))
	}
}

// commitTask is a batch of committed entries for the FSM goroutine, with the committed
// configuration as of its last entry: noteCommittedConfiguration tracked every entry of the
// batch already.
func (r *Raft) commitTask(batch []commitTuple) fsmTask {
	return fsmTask{commits: batch, configuration: r.configurations.committed, configurationIndex: r.configurations.committedIndex}
}

// committedEntry returns a committed entry for the FSM: a follower's from the entries it just
// stored (decoded from the leader's request, not read back from the store), a leader's through
// the term's cache, else from the store. Main loop only.
func (r *Raft) committedEntry(index uint64) (*Log, error) {
	if ls := r.leaderState; ls != nil {
		return ls.entry(r.logs, index)
	}
	if e := r.recent.get(index); e != nil {
		return e, nil
	}
	l := new(Log)
	if err := r.logs.GetLog(index, l); err != nil {
		return nil, err
	}
	return l, nil
}

// noteCommittedConfiguration makes a committed configuration entry the committed
// configuration. It is the one place that tracks the committed configuration as the commit
// index moves: every committed entry passes through applyCommitted, including a configuration
// that committed while a newer one was already appended (which a truncation of the newer one
// must fall back to).
func (r *Raft) noteCommittedConfiguration(l *Log) {
	if l.Type != LogConfiguration || l.Index <= r.configurations.committedIndex {
		return
	}
	c := r.configurations.latest
	if l.Index != r.configurations.latestIndex {
		var err error
		if c, err = decodeConfigurationEntry(l); err != nil {
			r.logger.Error("committed configuration entry does not decode", "error", err)
			return
		}
	}
	r.setConfigurations(r.configurations.withCommitted(c, l.Index))
}

// entry reads one of the leader's entries, from the term's cache first: an entry may not be
// written locally yet. The entry is shared, never to be modified. Safe from any goroutine.
func (ls *leaderState) entry(logs LogStore, index uint64) (*Log, error) {
	if e := ls.cache.get(index); e != nil {
		return e, nil
	}
	l := new(Log)
	if err := logs.GetLog(index, l); err != nil {
		return nil, err
	}
	return l, nil
}
