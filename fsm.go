package raft

import (
	"fmt"
	"io"
	"time"
)

// FSM is the user's replicated state machine.
//
// All three methods are called from one goroutine, the node's FSM goroutine, never
// concurrently with each other, so an FSM needs no locking against Raft (it still needs it
// against its own readers).
type FSM interface {
	// Apply applies one committed entry of type LogCommand and returns a value that is
	// handed to the ApplyFuture of the node that accepted the command. It must be
	// deterministic: every node applies the same entries in the same order and must reach
	// the same state. It must not keep log.Data after returning unless it copies it.
	Apply(log *Log) any

	// Snapshot returns a point-in-time snapshot of the state. It runs on the FSM goroutine,
	// so applies wait while it runs: it must be cheap (take a reference to an immutable or
	// copy-on-write structure) and leave the expensive work to FSMSnapshot.Persist, which
	// runs concurrently with later applies.
	Snapshot() (FSMSnapshot, error)

	// Restore replaces the whole state with the snapshot read from r, discarding the current
	// state. It must close r.
	Restore(r io.ReadCloser) error
}

// BatchingFSM is an optional extension: an FSM that implements it receives committed commands
// in batches, which lets it amortize work such as a disk write per batch.
type BatchingFSM interface {
	FSM

	// ApplyBatch applies the entries in order and returns one response per entry, in order.
	// It is called on the FSM goroutine like Apply.
	ApplyBatch(logs []*Log) []any
}

// FSMSnapshot is a snapshot returned by FSM.Snapshot.
type FSMSnapshot interface {
	// Persist writes the snapshot to sink and closes it, or calls sink.Cancel on failure.
	// It runs on the snapshot goroutine, concurrently with FSM.Apply: it must read only the
	// state captured when Snapshot was called.
	Persist(sink SnapshotSink) error

	// Release is called once the snapshot is no longer needed, whether Persist succeeded
	// or not.
	Release()
}

// commitTuple is one committed entry on its way to the FSM, with the future of the client
// waiting for it on this node, if any.
type commitTuple struct {
	log    *Log
	future *logFuture
}

// fsmTask is one unit of work for the FSM goroutine, in log order: a batch of committed
// entries, or a snapshot restore.
type fsmTask struct {
	commits []commitTuple
	// configuration is the committed configuration as of the batch's last entry, from
	// configurationIndex; the main loop knows it, and snapshots of the FSM record it.
	configuration      Configuration
	configurationIndex uint64
	restore            *restoreTask
}

// restoreTask asks the FSM goroutine to replace the FSM state with a stored snapshot.
type restoreTask struct {
	id                 string
	index              uint64
	term               uint64
	configuration      Configuration
	configurationIndex uint64
	done               chan error // buffer 1: the FSM goroutine never blocks answering
}

// fsmSnapshotRequest asks the FSM goroutine for a point-in-time FSM snapshot.
type fsmSnapshotRequest struct {
	done chan fsmSnapshotResult // buffer 1
}

type fsmSnapshotResult struct {
	snapshot           FSMSnapshot
	index              uint64
	term               uint64
	configuration      Configuration
	configurationIndex uint64
	// base is the node's snapshot when this one was taken: takeSnapshot publishes this
	// snapshot only if the node's snapshot is still base (see compactLogs).
	base *indexTerm
	err  error
}

// runFSM is the FSM goroutine: the only caller of the user's FSM. It exits on shutdown.
func (r *Raft) runFSM() {
	batcher, batching := r.fsm.(BatchingFSM)
	for {
		select {
		case <-r.fsmq.notify:
			t, ok := r.fsmq.next()
			if !ok {
				continue
			}
			if t.restore == nil {
				r.fsmConfig, r.fsmConfigIndex = t.configuration, t.configurationIndex
			}
			switch {
			case t.restore != nil:
				t.restore.done <- r.fsmRestore(t.restore)
			case batching:
				if !r.applyBatch(batcher, t.commits) {
					return // the node stopped: the FSM's state is no longer known
				}
			default:
				r.applyOneByOne(t.commits)
			}
			r.fsmq.done(t)
		case req := <-r.fsmSnapshotCh:
			req.done <- r.fsmSnapshot()
		case <-r.shutdownCh:
			return
		}
	}
}

// applyOneByOne applies a batch through FSM.Apply.
func (r *Raft) applyOneByOne(commits []commitTuple) {
	start := time.Now()
	for _, c := range commits {
		var resp any
		if c.log.Type == LogCommand {
			resp = r.fsm.Apply(c.log)
		}
		if c.future != nil {
			c.future.response = resp
		}
	}
	r.finishApply(commits, start)
}

// applyBatch applies the commands of a batch with one ApplyBatch call. An FSM that breaks the
// contract (a response count other than the entry count) stops the node with the cause and
// fails the batch's futures; applyBatch then reports false.
func (r *Raft) applyBatch(fsm BatchingFSM, commits []commitTuple) bool {
	start := time.Now()
	cmds := make([]*Log, 0, len(commits))
	for _, c := range commits {
		if c.log.Type == LogCommand {
			cmds = append(cmds, c.log)
		}
	}
	var resps []any
	if len(cmds) > 0 {
		resps = fsm.ApplyBatch(cmds)
		if len(resps) != len(cmds) {
			err := fmt.Errorf("%w: BatchingFSM.ApplyBatch returned %d responses for %d entries", ErrFSMContract, len(resps), len(cmds))
			// The futures first: once the node stops, a caller waiting on one may see the
			// shutdown before the cause.
			for _, c := range commits {
				if c.future != nil {
					c.future.respond(err)
				}
			}
			r.fatal(err)
			return false
		}
	}
	i := 0
	for _, c := range commits {
		if c.log.Type != LogCommand {
			continue
		}
		if c.future != nil {
			c.future.response = resps[i]
		}
		i++
	}
	r.finishApply(commits, start)
	return true
}

// finishApply publishes the applied index, then resolves the futures: a client never hears
// of success before its entry was applied.
func (r *Raft) finishApply(commits []commitTuple, start time.Time) {
	last := commits[len(commits)-1].log
	r.publishApplied(last.Index, last.Term)
	fsmApplyMetric(start, len(commits))
	now := time.Now()
	for _, c := range commits {
		if c.future != nil {
			applyLatencyMetric(c.future.created)
			stageMetric(stageApplied, c.future.committed, now)
			c.future.respond(nil)
		}
	}
}

// fsmSnapshot takes the FSM's point-in-time snapshot with the index it covers.
func (r *Raft) fsmSnapshot() fsmSnapshotResult {
	index, term := r.appliedIndexTerm()
	base := r.snapshot.Load()
	if index == 0 || index <= base.index {
		return fsmSnapshotResult{err: ErrNothingNewToSnapshot}
	}
	start := time.Now()
	snap, err := r.fsm.Snapshot()
	fsmSnapshotMetric(start)
	if err != nil {
		return fsmSnapshotResult{err: fmt.Errorf("raft: FSM snapshot: %w", err)}
	}
	return fsmSnapshotResult{snapshot: snap, index: index, term: term, base: base,
		configuration: r.fsmConfig.Clone(), configurationIndex: r.fsmConfigIndex}
}

// fsmRestore replaces the FSM state with a stored snapshot.
func (r *Raft) fsmRestore(t *restoreTask) error {
	_, rc, err := r.snaps.Open(t.id)
	if err != nil {
		return fmt.Errorf("raft: opening snapshot %s: %w", t.id, err)
	}
	start := time.Now()
	if err := restoreVerified(r.fsm, rc); err != nil {
		return fmt.Errorf("raft: restoring snapshot %s: %w", t.id, err)
	}
	fsmRestoreMetric(start)
	r.fsmConfig, r.fsmConfigIndex = t.configuration.Clone(), t.configurationIndex
	r.publishApplied(t.index, t.term)
	return nil
}

// fsmBacklogBatches is how many batches of MaxAppendEntries committed entries may wait for
// the FSM before the main loop holds the rest back: enough to keep a fast FSM busy through a
// burst, few enough to bound the memory of a slow one.
const fsmBacklogBatches = 64

// fsmBacklogBytesBatches bounds the same backlog in bytes, in full batches of
// MaxAppendEntriesBytes (16 MiB by default), so large entries do not multiply it.
const fsmBacklogBytesBatches = 16

// applyCommitted hands the committed entries up to commit that were not handed over yet to
// the FSM goroutine, in batches bounded like requests (count and bytes), while its queue has
// room; the rest wait until the queue signals room (fsmQueue.room), which every role loop
// serves. ready holds this term's futures for some of the entries, in index order; the other
// entries come from committedEntry. It returns how many of ready it handed over.
func (r *Raft) applyCommitted(commit uint64, ready []*logFuture) int {
	if r.install != nil || r.restoring != nil && r.restoring.fsm {
		return 0 // the snapshot being restored covers what was committed; see finishInstall
	}
	newBudget := func() byteBudget {
		return byteBudget{maxEntries: r.conf.MaxAppendEntries, maxBytes: r.conf.MaxAppendEntriesBytes}
	}
	budget := newBudget()
	used := 0
	var batch []commitTuple
	for idx := r.fsmQueuedIndex + 1; idx <= commit; idx++ {
		if len(batch) == 0 && r.fsmq.full() {
			break
		}
		fromReady := used < len(ready) && ready[used].log.Index == idx
		var c commitTuple
		if fromReady {
			c = commitTuple{log: &ready[used].log, future: ready[used]}
		} else {
			l, err := r.committedEntry(idx)
			if err != nil {
				r.fatal(fmt.Errorf("raft: reading committed entry %d: %w", idx, err))
				break
			}
			c = commitTuple{log: l}
		}
		if !budget.admit(entryBytes(c.log)) {
			r.fsmq.push(r.commitTask(batch))
			batch, budget = nil, newBudget()
			if r.fsmq.full() {
				break // c is not taken: it goes once there is room
			}
			budget.admit(entryBytes(c.log))
		}
		if fromReady {
			used++
		}
		batch = append(batch, c)
		r.noteCommittedConfiguration(c.log)
		r.fsmQueuedIndex = idx
	}
	if len(batch) > 0 {
		r.fsmq.push(r.commitTask(batch))
	}
	r.recent.dropThrough(r.fsmQueuedIndex)
	return used
}
