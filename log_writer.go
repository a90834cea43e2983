package raft

import (
	"fmt"
	"time"
)

// logWriter persists the leader's entries on its own goroutine while replication already
// sends them (Ongaro's thesis, section 10.2.1). It lives for one leader term. The main loop
// owns it: it submits dispatched entries, handles each completed write, and at the end of
// the term stops it. One batch is outstanding at a time; entries dispatched meanwhile wait in
// pending and go out together in the next batch, one StoreLogs (one fsync) for all of them.
//
// Failure policy, the same on every path (a completed write on the main loop, the wait of a
// Restore, the flush at step-down):
//   - A StoreLogs error stops the node (Raft.fatal) with the cause, and the term's waiting
//     requests fail with ErrRaftShutdown wrapping it: the log on disk is in an unknown state,
//     and followers may already have committed, and this node applied, entries it could not
//     write. A leader that merely stepped down would go on with a log that ends before what
//     it applied.
//   - A write outstanding for longer than LogStoreTimeout makes the leader step down
//     (ErrLeadershipLost wrapping ErrLogStoreTimeout): a leader over a stuck disk cannot
//     commit but would keep its followers from electing one that can. The write is not
//     abandoned: stop waits for it and writes what is still pending, for the same reason as
//     above; if it then fails, the first rule applies.
type logWriter struct {
	r *Raft

	batchCh chan []*Log      // unbuffered: a batch is handed over only while the writer is idle
	doneCh  chan writeResult // buffer 1: at most one batch is outstanding
	stopCh  chan struct{}    // closed by stop once every submitted entry was written
	exited  chan struct{}    // closed by the writer goroutine when it exits

	// Main loop only.
	busy         bool      // a batch is outstanding
	started      time.Time // when the outstanding batch was handed over
	pending      []*Log    // submitted, not yet handed over
	pendingBytes int       // entryBytes of pending
}

// writeResult is the outcome of one StoreLogs by the writer.
type writeResult struct {
	lastIndex uint64
	err       error
}

// newLogWriter builds a writer and starts its goroutine, which exits on stop or shutdown.
func newLogWriter(r *Raft) *logWriter {
	w := &logWriter{
		r:       r,
		batchCh: make(chan []*Log),
		doneCh:  make(chan writeResult, 1),
		stopCh:  make(chan struct{}),
		exited:  make(chan struct{}),
	}
	r.goFunc(w.run)
	return w
}

// run is the writer goroutine.
func (w *logWriter) run() {
	defer close(w.exited)
	for {
		select {
		case batch := <-w.batchCh:
			start := time.Now()
			err := w.r.logs.StoreLogs(batch)
			storeLogsMetric(start, len(batch))
			w.doneCh <- writeResult{lastIndex: batch[len(batch)-1].Index, err: err} // never blocks
		case <-w.stopCh:
			return
		case <-w.r.shutdownCh:
			return
		}
	}
}

// submit queues entries for writing and hands them over at once if the writer is idle.
func (w *logWriter) submit(logs []*Log) {
	w.pending = append(w.pending, logs...)
	for _, l := range logs {
		w.pendingBytes += entryBytes(l)
	}
	w.kick()
}

// kick hands the oldest pending entries to the writer if it is idle: as many as
// MaxAppendEntries and MaxAppendEntriesBytes allow, at least one, so one StoreLogs never
// holds more than a request does.
func (w *logWriter) kick() {
	if w.busy || len(w.pending) == 0 {
		return
	}
	budget := byteBudget{maxEntries: w.r.conf.MaxAppendEntries, maxBytes: w.r.conf.MaxAppendEntriesBytes}
	n := 0
	for n < len(w.pending) && budget.admit(entryBytes(w.pending[n])) {
		n++
	}
	batch := w.pending[:n:n]
	w.pending = w.pending[n:]
	if len(w.pending) == 0 {
		w.pending = nil // let the array go
	}
	w.pendingBytes -= budget.bytes
	w.busy, w.started = true, time.Now()
	select {
	case w.batchCh <- batch:
	case <-w.r.shutdownCh:
	}
}

// done delivers the outcome of the outstanding batch; the main loop selects on it.
func (w *logWriter) done() <-chan writeResult { return w.doneCh }

// finish records a completed batch: the index now durable, or the wrapped write error.
func (w *logWriter) finish(res writeResult) (uint64, error) {
	w.busy = false
	if res.err != nil {
		return 0, fmt.Errorf("raft: local log write up to index %d failed: %w", res.lastIndex, res.err)
	}
	return res.lastIndex, nil
}

// backlogged reports whether the entries submitted and not yet handed over reached
// maxPendingWrites or four full batches of bytes: the leader then takes no applies until the
// disk catches up (backpressure instead of memory).
func (w *logWriter) backlogged() bool {
	return len(w.pending) >= w.r.maxPendingWrites() || w.pendingBytes >= 4*w.r.conf.MaxAppendEntriesBytes
}

// overdue reports whether the outstanding batch has taken longer than LogStoreTimeout.
func (w *logWriter) overdue(now time.Time) bool {
	return w.busy && now.Sub(w.started) > w.r.conf.LogStoreTimeout
}

// await waits for the outstanding batch, without handing over the next one, so the log
// stops changing. It returns the durable index (0 if nothing was outstanding), the write
// error, ErrLogStoreTimeout once the batch has been outstanding for LogStoreTimeout, or
// ErrRaftShutdown.
func (w *logWriter) await() (uint64, error) {
	if !w.busy {
		return 0, nil
	}
	timer := time.NewTimer(max(w.r.conf.LogStoreTimeout-time.Since(w.started), 0))
	defer timer.Stop()
	select {
	case res := <-w.doneCh:
		return w.finish(res)
	case <-timer.C:
		return 0, ErrLogStoreTimeout
	case <-w.r.shutdownCh:
		return 0, ErrRaftShutdown
	}
}

// drop discards the entries submitted and not yet handed over (a Restore replaces the log).
func (w *logWriter) drop() { w.pending, w.pendingBytes = nil, 0 }

// stop writes every submitted entry, waiting as long as the disk takes, then stops the
// writer goroutine and waits for it. It returns the first write error, or ErrRaftShutdown
// if the node shut down first.
func (w *logWriter) stop() error {
	for w.busy || len(w.pending) > 0 {
		if !w.busy {
			w.kick()
			continue
		}
		select {
		case res := <-w.doneCh:
			if _, err := w.finish(res); err != nil {
				return err
			}
		case <-w.r.shutdownCh:
			return ErrRaftShutdown
		}
	}
	close(w.stopCh)
	select {
	case <-w.exited:
		return nil
	case <-w.r.shutdownCh:
		return ErrRaftShutdown
	}
}
