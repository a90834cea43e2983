package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// errRestoreNotReady tells Restore that the leader has not committed an entry of its term
// yet, so its committed configuration may be stale; Restore runs another barrier and retries.
var errRestoreNotReady = errors.New("raft: leader has not committed an entry of its term yet")

// restoreFuture carries a Restore call to the main loop.
type restoreFuture struct {
	deferError
	meta   *SnapshotMeta
	reader io.Reader
	// noop is written by the main loop before respond(nil): the entry right after the
	// restored snapshot, which commits only once a quorum holds the snapshot.
	noop *logFuture
}

// Restore replaces the state of every FSM in the cluster with the snapshot read from reader,
// for example a backup taken with Snapshot and SnapshotFuture.Open. It is leader-only: other
// nodes fail at once with ErrNotLeader. meta.Version must be a supported SnapshotVersion and
// meta.Size the exact length of the data; the other fields of meta are ignored, since the
// leader decides where the snapshot sits in its log and which configuration it carries.
//
// Commands in flight on the leader (dispatched but not yet handed to its FSM) fail with
// ErrAbortedByRestore: whether or not they commit, their effect is overwritten. Commands
// still queued in Apply are applied after the restore, on top of the restored state. A
// membership change in flight is aborted too (the snapshot carries the leader's committed
// configuration); queued ones run afterwards. During a leadership transfer Restore fails with
// ErrLeadershipTransferInProgress.
//
// The copy and the leader's FSM restore run on goroutines: the leader keeps answering RPCs,
// keeping its followers and checking its quorum (it steps down, and Restore returns
// ErrLeadershipLost, if it loses the quorum meanwhile), however long they take. It appends
// nothing until the restore is done: Apply, Barrier, membership changes, leadership transfers,
// reads and another Restore wait for it (up to their own timeouts), and lease reads are
// suspended.
//
// How it works: the leader streams reader into a new snapshot in its SnapshotStore (never
// holding it whole in memory), at index S = max(last log index, meta.Index) + 1 and the
// leader's current term T; restores its own FSM from it through the FSM goroutine, after
// every queued apply; makes it its latest snapshot and deletes its whole log, so replication
// to every follower falls back to InstallSnapshot of it; and appends a no-op at S+1. Restore
// returns nil once that no-op was committed and applied, which means a quorum holds S.
//
// Why followers cannot keep anything that contradicts the restored state: a follower keeps
// its log after an installed snapshot only if it holds the snapshot's last entry with the
// same term (Raft paper, Figure 13, step 6). No node holds an entry at S with term T: only
// this leader creates entries of term T, and it had given out indexes up to its last index
// only, which is below S. So every follower discards its whole log when it installs the
// snapshot. Nor can a follower skip the install because it already committed past S: every
// committed entry is in the leader's log (Leader Completeness), so no commit index anywhere
// exceeds the leader's last index, which is below S. Using meta.Index too keeps the indexes
// the FSM sees increasing past those of the backup.
//
// timeout bounds the hand-off to the main loop, a barrier when the leader has not committed an
// entry of its term yet (its committed configuration may be stale until then) and the wait
// for the commit; zero means no limit. Once the leader started reading reader it finishes
// the copy and its own FSM restore before Restore returns, so reader is never read after
// Restore returned. ErrTimeout or ErrLeadershipLost mean the outcome is unknown: the restored
// state may be in place on some nodes and not on others (a restore is not atomic across a
// leader failure); call Restore again until it returns nil.
func (r *Raft) Restore(meta *SnapshotMeta, reader io.Reader, timeout time.Duration) error {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	return r.restore(context.Background(), meta, reader, deadline)
}

// RestoreContext is Restore bounded by ctx instead of a timeout. When ctx ends first, it
// returns an error matching ctx.Err() and ErrEnqueueTimeout (the leader never took the
// request: nothing changed) or ErrTimeout (the restore is under way or done: the outcome is
// unknown, as for Restore). Once the leader started reading reader, Restore still finishes the
// copy and its own FSM restore before returning, whatever ctx does.
func (r *Raft) RestoreContext(ctx context.Context, meta *SnapshotMeta, reader io.Reader) error {
	return r.restore(ctx, meta, reader, time.Time{})
}

func (r *Raft) restore(ctx context.Context, meta *SnapshotMeta, reader io.Reader, deadline time.Time) error {
	if err := checkRestoreArgs(meta, reader); err != nil {
		return err
	}
	for {
		f := &restoreFuture{meta: meta, reader: reader}
		f.init(nil, deadline, ctx) // the deadline is read by the main loop for the no-op
		if err := r.sendLeaderRequest(f, deadline, ctx); err != nil {
			return err
		}
		// No deadline and no shutdown on this wait: once the main loop took the request
		// it always answers, and only then is reader free again.
		<-f.done
		if errors.Is(f.err, errRestoreNotReady) {
			// A new leader: let it commit an entry of its term, then try again.
			barrier := r.newLogFuture(Log{Type: LogBarrier}, untilDeadline(deadline), ctx)
			if err := r.enqueue(barrier).Error(); err != nil {
				return err
			}
			continue
		}
		if f.err != nil {
			return f.err
		}
		return f.noop.Error()
	}
}

// untilDeadline turns a deadline into a timeout for the calls Restore makes: zero for no
// deadline, at least a nanosecond otherwise (zero would mean no limit).
func untilDeadline(deadline time.Time) time.Duration {
	if deadline.IsZero() {
		return 0
	}
	return max(time.Until(deadline), time.Nanosecond)
}

// checkRestoreArgs refuses what Restore can never restore.
func checkRestoreArgs(meta *SnapshotMeta, reader io.Reader) error {
	switch {
	case meta == nil || reader == nil:
		return fmt.Errorf("%w: metadata and reader are required", ErrInvalidRestore)
	case meta.Size < 0 || meta.Size == math.MaxInt64:
		return fmt.Errorf("%w: size %d", ErrInvalidRestore, meta.Size)
	case meta.Index >= math.MaxUint64/2:
		return fmt.Errorf("%w: index %d", ErrInvalidRestore, meta.Index)
	}
	if err := checkSnapshotVersion(meta.Version); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRestore, err)
	}
	return nil
}

// leaderRestore is a Restore in progress on this node. Its two slow steps run on goroutines so
// the main loop goes on answering RPCs, ticking (check-quorum, the disk-stall timeout) and
// stepping down as usual: first the user's data is streamed into a new snapshot
// (storeRestoreSnapshot), then the FSM goroutine restores from it; after each step the main
// loop takes the result from doneCh (restoreStepDone). It is owned by the main loop
// (r.restoring) and outlives a step-down, which the steps' results then handle.
//
// While it runs the leader appends nothing, so no entry can reach the restored snapshot's
// index and nothing the restore wipes is committed after it: Apply, Barrier and every request
// of leaderReqCh (membership changes, transfers, reads, another Restore) wait in their
// channels, up to their callers' timeouts, as they did when the restore ran on the main loop;
// queued membership changes and promotions do not start; the lease is withdrawn, so no read
// runs on an FSM being replaced. Entries committed before the FSM step are applied before it.
// A node that is not (or no longer) the leader of the restore's term while it runs refuses
// entries, snapshots and TimeoutNow (ErrInstallInProgress) and starts no election, as during
// an install: it must not acknowledge entries a restore may delete.
type leaderRestore struct {
	f           *restoreFuture
	index, term uint64
	config      Configuration
	configIndex uint64
	// fsm is false while the data is streamed into the store, true while the FSM restores.
	fsm bool
	// id is the stored snapshot's, written by the storing goroutine before it reports.
	id     string
	doneCh chan error // buffer 1: each step reports once, and never blocks doing so
}

// restoreDone is the channel of the restore step in progress, or nil.
func (r *Raft) restoreDone() <-chan error {
	if r.restoring == nil {
		return nil
	}
	return r.restoring.doneCh
}

// localRestoreBusy reports whether this node's state is being replaced by a snapshot (a
// follower's install, or a Restore on a node that no longer leads its term): it then refuses
// entries, snapshots and TimeoutNow and starts no election.
func (r *Raft) localRestoreBusy() bool {
	return r.install != nil || r.restoring != nil && !r.leadsTerm(r.restoring.term)
}

// leadsTerm reports whether this node is the leader of term.
func (r *Raft) leadsTerm(term uint64) bool {
	return r.leaderState != nil && r.leaderState.term == term && r.getState() == Leader
}

// handleRestore starts a Restore on the leader's main loop; see Restore and leaderRestore.
// Every path responds to f, here or once the restore's steps ended.
func (r *Raft) handleRestore(f *restoreFuture) {
	ls := r.leaderState
	if r.transfer != nil {
		f.respond(ErrLeadershipTransferInProgress)
		return
	}
	if r.commitIndex.Load() < ls.commitment.startIndex || r.restoring != nil {
		// Restore runs a barrier and retries: the barrier waits for the restore in progress.
		f.respond(errRestoreNotReady)
		return
	}
	// Let the writer finish its batch and start no other, so the log stops changing.
	if err := r.writeOutcome(ls.writer.await()); err != nil {
		f.respond(err)
		return
	}
	lastIndex, _ := r.lastLogIndexTerm()
	lr := &leaderRestore{f: f, index: max(lastIndex, f.meta.Index) + 1, term: ls.term,
		config: r.configurations.committed.Clone(), configIndex: r.configurations.committedIndex,
		doneCh: make(chan error, 1)}
	// Marked before the snapshot exists: a crash from here on restarts fenced (or undone).
	if err := r.markUnconfirmedSnapshot(lr.index, lr.term); err != nil {
		r.fatal(err)
		f.respond(err)
		return
	}
	r.restoring = lr
	r.lease.Store(nil)
	// Exits once the data is stored or refused: the user's reader bounds it, as it bounds
	// Restore.
	r.goFunc(func() {
		id, err := r.storeRestoreSnapshot(lr)
		lr.id = id
		lr.doneCh <- err
		if r.stopping() {
			// The main loop may be gone: answer here, the reader is no longer used.
			f.respond(ErrRaftShutdown)
		}
	})
}

// restoreStepDone takes the result of the restore step that just ended. Main loop.
func (r *Raft) restoreStepDone(err error) {
	lr := r.restoring
	if lr.fsm {
		r.restoring = nil
		r.restoredFSM(lr, err)
		return
	}
	if err != nil {
		// Nothing was stored: drop the mark, and everything goes on as before.
		r.restoring = nil
		r.confirmSnapshot()
		r.resumeAfterRestore(lr)
		lr.f.respond(err)
		return
	}
	if !r.leadsTerm(lr.term) {
		// The term ended while the data streamed in. Nothing changed but the stored
		// snapshot, which no follower was sent and this node never counted: undo it.
		r.restoring = nil
		if err := r.recordUndone(indexTerm{index: lr.index, term: lr.term}); err != nil {
			r.fatal(err)
		} else {
			r.confirmSnapshot()
		}
		lr.f.respond(ErrLeadershipLost)
		return
	}
	ls := r.leaderState
	// The dispatched entries are dropped, written or not: the restore deletes the whole log.
	for _, fut := range ls.inflight {
		fut.respond(ErrAbortedByRestore)
	}
	ls.inflight, ls.uncommittedBytes = nil, 0
	ls.writer.drop()
	if p := ls.promotion; p != nil {
		// An AddVoter waiting for its server to catch up: the restore takes the committed
		// configuration, so the change is aborted like the other requests in flight.
		p.future.respond(ErrAbortedByRestore)
		ls.promotion = nil
	}
	// From here on nothing more is handed to the FSM (applyCommitted), so the restore task
	// follows exactly what was handed over before.
	lr.fsm = true
	task := &restoreTask{id: lr.id, index: lr.index, term: lr.term, configuration: lr.config,
		configurationIndex: lr.configIndex}
	// Exits once the FSM goroutine restored (after every apply queued before), or on
	// shutdown, when it answers the caller itself.
	r.goFunc(func() {
		err := r.restoreFSMFrom(task)
		if errors.Is(err, ErrRaftShutdown) && r.stopping() {
			lr.f.respond(ErrRaftShutdown)
			return
		}
		lr.doneCh <- err
	})
}

// restoredFSM finishes a restore whose FSM step ended. A failed FSM restore stopped the node
// (restoreFSMFrom). Otherwise the FSM holds the restored state: the leader adopts the snapshot
// and appends the no-op after it; a node that lost its term meanwhile adopts it as a follower,
// fenced by the unconfirmed mark until a leader settles it.
func (r *Raft) restoredFSM(lr *leaderRestore, err error) {
	if err != nil {
		lr.f.respond(err)
		return
	}
	if !r.leadsTerm(lr.term) {
		err := r.replaceLogWithSnapshot(lr.index, lr.term, lr.config, lr.configIndex)
		if err != nil {
			r.fatal(err)
			lr.f.respond(err)
			return
		}
		r.logger.Warn("lost leadership while restoring a user snapshot; holding it unconfirmed", "index", lr.index, "term", lr.term)
		lr.f.respond(ErrLeadershipLost)
		return
	}
	if err := r.adoptRestoredSnapshot(lr.index, lr.term, lr.config, lr.configIndex); err != nil {
		r.fatal(err)
		lr.f.respond(err)
		return
	}
	r.logger.Info("restored user snapshot", "index", lr.index, "term", lr.term)
	noop := r.newLogFuture(Log{Type: LogNoop}, 0, nil)
	noop.deadline, noop.ctx = lr.f.deadline, lr.f.ctx
	lr.f.noop = noop
	r.dispatchLogs([]*logFuture{noop})
	r.resumeAfterRestore(lr)
	lr.f.respond(nil)
}

// resumeAfterRestore lets a leader that still leads the restore's term go on: its writer
// takes entries again, its lease is published again, and membership changes held back start.
func (r *Raft) resumeAfterRestore(lr *leaderRestore) {
	if !r.leadsTerm(lr.term) {
		return
	}
	r.leaderState.writer.kick()
	r.publishLease()
	r.maybeStartConfigChange()
}

// abandonRestore answers the caller of a restore in progress when the main loop exits on
// shutdown: at once if its data was stored (the reader is no longer used), else only if the
// storing goroutine is done with the reader (otherwise it answers itself, see handleRestore).
func (r *Raft) abandonRestore() {
	lr := r.restoring
	if lr == nil {
		return
	}
	if !lr.fsm {
		select {
		case <-lr.doneCh:
		default:
			return
		}
	}
	lr.f.respond(ErrRaftShutdown)
}

// storeRestoreSnapshot streams the user's data into a new snapshot at the restore's index and
// term. The reader ends by itself, so data longer than meta.Size is noticed. Runs on the
// restore's storing goroutine.
func (r *Raft) storeRestoreSnapshot(lr *leaderRestore) (string, error) {
	at := &restoreTask{index: lr.index, term: lr.term, configuration: lr.config, configurationIndex: lr.configIndex}
	src := snapshotSource{data: lr.f.reader, size: lr.f.meta.Size, ends: true, badSize: ErrInvalidRestore}
	id, err := r.streamIntoSnapshot(lr.f.meta.Version, at, src)
	if err != nil {
		return "", fmt.Errorf("raft: storing snapshot to restore: %w", err)
	}
	return id, nil
}

// adoptRestoredSnapshot makes the restored snapshot the leader's latest (replaceLogWithSnapshot)
// and counts the leader for it.
func (r *Raft) adoptRestoredSnapshot(index, term uint64, config Configuration, configIndex uint64) error {
	// Requests replication is building from the old log must not be sent.
	r.leaderState.logVersion.Add(1)
	if err := r.replaceLogWithSnapshot(index, term, config, configIndex); err != nil {
		return err
	}
	r.startStopReplication()
	// The snapshot is durable in the store: the leader holds everything up to index.
	r.leaderState.commitment.match(r.localID, index)
	return nil
}

// replaceLogWithSnapshot makes a restored snapshot the node's latest, deletes its whole log,
// and moves its log tail, FSM hand-off point and configuration to the snapshot.
func (r *Raft) replaceLogWithSnapshot(index, term uint64, config Configuration, configIndex uint64) error {
	r.moveToSnapshot(index, term, config, configIndex)
	first, err := r.logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft: reading first index: %w", err)
	}
	last, err := r.logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft: reading last index: %w", err)
	}
	r.recent.truncateFrom(0)
	if first != 0 {
		if err := r.logs.DeleteRange(first, last); err != nil {
			return fmt.Errorf("raft: deleting the log behind a restored snapshot: %w", err)
		}
	}
	r.lastLog.Store(&indexTerm{index: index, term: term})
	return nil
}

// An unconfirmed snapshot is one this node holds although the cluster may never have
// committed it: the snapshot of a Restore until its no-op commits, or such a snapshot a
// follower installed from its leader before the leader had committed it. A node restores its
// FSM from a snapshot and drops its log behind it at once, so it cannot simply undo one; it
// is fenced until a leader settles it (issue 10, bug 2):
//   - It never acknowledges entries below the snapshot that it would only skip: an
//     AppendEntries that ends below the snapshot and says nothing about it is refused with an
//     error wrapping ErrUncommittedRestore, so no leader counts this node for entries it
//     does not hold.
//   - A leader whose log holds the snapshot's index with the snapshot's term confirms it (only
//     the leader of that term made entries of it, so the leader holds the restore, which is
//     committed or will be through it). So does a commit index at or past the snapshot.
//   - A leader whose log cannot hold the snapshot (unconfirmedConflicts: another term at its
//     index, a later term before it, an earlier term after it) shows that the restore is not
//     in the current leader's log. The node treats the snapshot like a conflicting log entry
//     and replaces it, as a follower truncates a conflicting suffix; since it cannot rewind
//     its FSM, it is reset from the leader. It answers every AppendEntries of that term with
//     NeedSnapshot, naming its snapshot, and acknowledges and applies nothing; the leader
//     sends a committed snapshot of its own that is newer (by term, then index) than the
//     node's, taking one first if its latest is not; the node installs it although it lies
//     below its commit index (startInstall, finishInstall), and its commit index moves back
//     to that snapshot. An older leader snapshot, or one the leader has not committed itself,
//     is refused.
//
// Why the reset is safe: the leader's snapshot holds only committed entries, and it is newer
// than the discarded one in the order both of the snapshot stores and of the election rule
// (last term, then index), so nothing the node vouched for is undercut: every candidate it
// votes for afterwards is at least as up to date as the unconfirmed snapshot was. It is never
// applied on top of: the FSM goes from the restored state straight to the leader's snapshot.
//
// The mark is durable, and written before the snapshot becomes visible, so a node that
// crashes in the middle of its own Restore, or of such an install, restarts fenced as well.
// A crash in the middle of a reset restarts either still fenced on the unconfirmed snapshot
// (the leader's snapshot was not stored yet: the leader's next request starts the reset
// over) or from the leader's snapshot, which every store lists first since it is newer; the
// mark then names a snapshot the node does not start from and is dropped.

// encodeIndexTerm and decodeIndexTerm store a log position in the StableStore.
func encodeIndexTerm(it indexTerm) []byte {
	if it.index == 0 {
		return []byte{}
	}
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, it.index)
	binary.BigEndian.PutUint64(b[8:], it.term)
	return b
}

func decodeIndexTerm(b []byte) (indexTerm, error) {
	switch len(b) {
	case 0:
		return indexTerm{}, nil
	case 16:
		return indexTerm{index: binary.BigEndian.Uint64(b), term: binary.BigEndian.Uint64(b[8:])}, nil
	default:
		return indexTerm{}, fmt.Errorf("raft: stored unconfirmed snapshot is %d bytes, want 16", len(b))
	}
}

// markUnconfirmedSnapshot durably records that the snapshot about to exist at index and term
// is unconfirmed; call it before the snapshot becomes visible in the store.
func (r *Raft) markUnconfirmedSnapshot(index, term uint64) error {
	it := indexTerm{index: index, term: term}
	if err := r.stable.Set(keyUnconfirmedSnapshot, encodeIndexTerm(it)); err != nil {
		return fmt.Errorf("raft: recording an unconfirmed snapshot at %d: %w", index, err)
	}
	r.unconfirmed = it
	r.unconfirmedIndex.Store(index)
	return nil
}

// confirmSnapshot drops the unconfirmed mark. A failure to persist it stops the node (it
// would restart fenced by a settled snapshot and never acknowledge anything again). While a
// Restore is in progress the mark names the restore's snapshot, which only the restore's
// steps settle.
func (r *Raft) confirmSnapshot() {
	if r.unconfirmed.index == 0 || r.restoring != nil {
		return
	}
	if err := r.stable.Set(keyUnconfirmedSnapshot, encodeIndexTerm(indexTerm{})); err != nil {
		r.fatal(fmt.Errorf("raft: clearing the unconfirmed snapshot mark: %w", err))
		return
	}
	r.logger.Info("snapshot confirmed by the cluster", "index", r.unconfirmed.index)
	r.unconfirmed = indexTerm{}
	r.unconfirmedIndex.Store(0)
	r.wakeAppliedWaiters() // reads held back by the mark may go on
}

// maybeConfirmSnapshot confirms the unconfirmed snapshot once the commit index reached it.
func (r *Raft) maybeConfirmSnapshot(commit uint64) {
	if u := r.unconfirmed.index; u != 0 && commit >= u {
		r.confirmSnapshot()
	}
}

// unconfirmedConflicts reports whether the leader of a request cannot hold this node's
// unconfirmed snapshot, judging by the positions the request names (its previous entry and
// its entries): the leader's log has another term at the snapshot's index, a later term at an
// index before it, or an earlier term at an index after it (terms never decrease along a log).
// Such a request starts a reset (see the comment above encodeIndexTerm).
func (r *Raft) unconfirmedConflicts(a *AppendEntriesRequest) bool {
	u := r.unconfirmed
	if snapIndex, snapTerm := r.snapshotIndexTerm(); u.index == 0 || u.index != snapIndex || u.term != snapTerm {
		return false
	}
	if a.PrevLogIndex != 0 && u.contradictedBy(a.PrevLogIndex, a.PrevLogTerm) {
		return true
	}
	for _, e := range a.Entries {
		if u.contradictedBy(e.Index, e.Term) {
			return true
		}
	}
	return false
}

// contradictedBy reports whether a log holding term at index cannot hold the entry it.
func (it indexTerm) contradictedBy(index, term uint64) bool {
	switch {
	case index < it.index:
		return term > it.term
	case index == it.index:
		return term != it.term
	default:
		return term < it.term
	}
}

// newerThan orders snapshot positions as the snapshot stores and the election rule do: by
// term, then index.
func (it indexTerm) newerThan(o indexTerm) bool {
	return it.term > o.term || it.term == o.term && it.index > o.index
}

// startReset begins resetting this node from its leader in the current term: from now on
// every AppendEntries of the term is answered with NeedSnapshot (resetResponse).
func (r *Raft) startReset() {
	term := r.currentTerm.Load()
	if r.resetTerm == term {
		return
	}
	r.resetTerm = term
	r.logger.Warn("the leader's log contradicts this node's unconfirmed snapshot: the restore was not committed; asking the leader for its snapshot to reset from",
		"index", r.unconfirmed.index, "term", r.unconfirmed.term, "leader-term", term)
}

// resetting reports whether this node waits, in its current term, for its leader's snapshot
// to replace its unconfirmed one.
func (r *Raft) resetting() bool {
	return r.resetTerm != 0 && r.resetTerm == r.currentTerm.Load() && r.unconfirmed.index != 0
}

// resetResponse fills resp to ask the leader for a snapshot newer than the unconfirmed one.
func (r *Raft) resetResponse(resp *AppendEntriesResponse) {
	resp.Success = false
	resp.NeedSnapshot = true
	resp.SnapshotIndex, resp.SnapshotTerm = r.unconfirmed.index, r.unconfirmed.term
}

// resetSnapshotRefused returns why an InstallSnapshot cannot reset this node, or nil: the
// snapshot must be newer than the unconfirmed one and committed by its leader.
func (r *Raft) resetSnapshotRefused(req *InstallSnapshotRequest) error {
	if !(indexTerm{index: req.LastLogIndex, term: req.LastLogTerm}).newerThan(r.unconfirmed) {
		return fmt.Errorf("%w: a snapshot at index %d term %d cannot replace this node's unconfirmed one at index %d term %d",
			ErrUncommittedRestore, req.LastLogIndex, req.LastLogTerm, r.unconfirmed.index, r.unconfirmed.term)
	}
	if req.LeaderCommitIndex != 0 && req.LastLogIndex > req.LeaderCommitIndex {
		return fmt.Errorf("%w: the leader's snapshot at index %d is not committed yet (commit index %d)",
			ErrUncommittedRestore, req.LastLogIndex, req.LeaderCommitIndex)
	}
	return nil
}

// fencedByUnconfirmedSnapshot reports the error to answer an AppendEntries with when the
// node's snapshot is unconfirmed and the request ends below it: a Success would acknowledge
// entries the node only skips.
func (r *Raft) fencedByUnconfirmedSnapshot(a *AppendEntriesRequest, snapIndex uint64) error {
	end := a.PrevLogIndex + uint64(len(a.Entries))
	if r.unconfirmed.index == 0 || r.unconfirmed.index != snapIndex || end == 0 || end >= snapIndex {
		return nil
	}
	return fmt.Errorf("%w: entries up to %d end below this node's unconfirmed snapshot at %d", ErrUncommittedRestore, end, snapIndex)
}

// loadSnapshotMarks reads the unconfirmed and undone snapshot marks at start-up, before the
// snapshot to start from is chosen.
func (r *Raft) loadSnapshotMarks() error {
	b, err := r.stable.Get(keyUnconfirmedSnapshot)
	if err != nil {
		return fmt.Errorf("raft: reading %s: %w", keyUnconfirmedSnapshot, err)
	}
	if r.unconfirmed, err = decodeIndexTerm(b); err != nil {
		return err
	}
	if b, err = r.stable.Get(keyUndoneSnapshot); err != nil {
		return fmt.Errorf("raft: reading %s: %w", keyUndoneSnapshot, err)
	}
	undone, err := decodeIndexTerms(b)
	if err != nil {
		return err
	}
	r.undone.Store(&undone)
	return nil
}

// decodeIndexTerms reads a list of log positions, each stored as encodeIndexTerm does.
func decodeIndexTerms(b []byte) ([]indexTerm, error) {
	if len(b)%16 != 0 {
		return nil, fmt.Errorf("raft: stored undone snapshots are %d bytes, want a multiple of 16", len(b))
	}
	var out []indexTerm
	for ; len(b) > 0; b = b[16:] {
		it, err := decodeIndexTerm(b[:16])
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, nil
}

// isUndone reports whether a stored snapshot was undone (listSnapshots hides it).
func (r *Raft) isUndone(it indexTerm) bool {
	u := r.undone.Load()
	return u != nil && slices.Contains(*u, it)
}

// recordUndone durably records that the stored snapshot at it is undone: no node can hold it
// or have counted on it, and this node never starts from it or sends it again. Snapshots the
// store no longer lists are dropped from the record, which so stays as short as the store.
// Main loop, or start-up.
func (r *Raft) recordUndone(it indexTerm) error {
	metas, err := r.snaps.List()
	if err != nil {
		return fmt.Errorf("raft: listing snapshots to record an undone one: %w", err)
	}
	var kept []indexTerm
	var buf []byte
	for _, m := range metas {
		if m := (indexTerm{index: m.Index, term: m.Term}); m == it || r.isUndone(m) {
			kept = append(kept, m)
			buf = append(buf, encodeIndexTerm(m)...)
		}
	}
	if err := r.stable.Set(keyUndoneSnapshot, buf); err != nil {
		return fmt.Errorf("raft: recording an undone snapshot: %w", err)
	}
	r.undone.Store(&kept)
	r.logger.Warn("undid a restored snapshot the cluster never committed", "index", it.index, "term", it.term)
	return nil
}

// undoUnconfirmedSnapshot undoes, at start-up, an unconfirmed snapshot whose log was never
// dropped: the node crashed in the middle of its own Restore, or of installing such a
// snapshot, before it deleted its log behind it. Until that deletion the node had not counted
// itself (a leader) or answered (a follower) for the snapshot, and it had not published it as
// its log's end, so no quorum can rely on it: the node safely starts from its previous
// snapshot and log instead, as if the Restore or install never happened. The snapshot cannot
// be deleted from the store (SnapshotStore has no delete), so it is recorded as undone, and
// listSnapshots hides it from now on. A snapshot whose log was already dropped stays, fenced
// (see markUnconfirmedSnapshot). A Restore whose leader lost its term while the data streamed
// in is undone the same way at run time (restoreStepDone).
func (r *Raft) undoUnconfirmedSnapshot(b logBounds) error {
	u := r.unconfirmed
	if u.index == 0 || b.last == 0 || b.last >= u.index {
		return nil
	}
	return r.recordUndone(u)
}

// listSnapshots lists the stored snapshots, newest first, without undone ones.
func (r *Raft) listSnapshots() ([]*SnapshotMeta, error) {
	metas, err := r.snaps.List()
	if u := r.undone.Load(); err != nil || u == nil || len(*u) == 0 {
		return metas, err
	}
	kept := metas[:0:0]
	for _, m := range metas {
		if !r.isUndone(indexTerm{index: m.Index, term: m.Term}) {
			kept = append(kept, m)
		}
	}
	return kept, nil
}

// loadUnconfirmedSnapshot applies the unconfirmed mark at start-up, only if the snapshot the
// node starts from is the marked one: otherwise that snapshot never became visible (a crash
// before its sink closed) or start-up undid it, and the mark is dropped.
func (r *Raft) loadUnconfirmedSnapshot() error {
	it := r.unconfirmed
	if it.index == 0 {
		return nil
	}
	if snapIndex, snapTerm := r.snapshotIndexTerm(); snapIndex == it.index && snapTerm == it.term && !r.isUndone(it) {
		r.logger.Warn("starting from a snapshot the cluster may not have committed; acknowledging nothing below it until a leader settles it", "index", it.index)
		return nil
	}
	r.unconfirmed = indexTerm{}
	if err := r.stable.Set(keyUnconfirmedSnapshot, encodeIndexTerm(indexTerm{})); err != nil {
		return fmt.Errorf("raft: clearing a stale unconfirmed snapshot mark: %w", err)
	}
	return nil
}
