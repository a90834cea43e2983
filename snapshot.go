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
	f.init(r.shutdownCh, time.Time{}, ctx)
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
// replaceLogWithSnapshot, finishInstall). The main loop never waits for a compaction, whose
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

// The pieces every way of taking on a snapshot shares: a follower's install, the leader's
// Restore and start-up.

// snapshotSource is data to store as a new snapshot: size bytes read from data. A reader that
// ends by itself (ends) is read one byte further, to notice data longer than size; a stream
// that goes on after the snapshot (an RPC's) is read for exactly size bytes. badSize, if set,
// is wrapped by the error of data of another length.
type snapshotSource struct {
	data    io.Reader
	size    int64
	ends    bool
	badSize error
}

// streamIntoSnapshot streams src into a new snapshot of the store at the position and
// configuration of at, never holding it whole in memory, and returns its ID once its sink
// closed. Data of another length than src.size, or a failed read, cancels the sink, leaving
// nothing behind.
func (r *Raft) streamIntoSnapshot(version int, at *restoreTask, src snapshotSource) (string, error) {
	sink, err := r.snaps.Create(version, at.index, at.term, at.configuration, at.configurationIndex)
	if err != nil {
		return "", fmt.Errorf("raft: creating snapshot: %w", err)
	}
	limit := src.size
	if src.ends {
		limit++
	}
	n, err := io.Copy(sink, io.LimitReader(src.data, limit))
	if err == nil && n != src.size {
		err = fmt.Errorf("read %d bytes of snapshot data, want %d", n, src.size)
		if src.badSize != nil {
			err = fmt.Errorf("%w: %w", src.badSize, err)
		}
	}
	if err != nil {
		_ = sink.Cancel()
		return "", fmt.Errorf("raft: reading snapshot data: %w", err)
	}
	if err := sink.Close(); err != nil {
		return "", fmt.Errorf("raft: closing snapshot: %w", err)
	}
	return sink.ID(), nil
}

// restoreFSMFrom hands the FSM goroutine the restore task (its snapshot stored under task.id),
// after every task queued before it, and waits for it; ErrRaftShutdown if the node stops
// first. A failed restore may have left the FSM half replaced: the node stops.
func (r *Raft) restoreFSMFrom(task *restoreTask) error {
	task.done = make(chan error, 1)
	r.fsmq.push(fsmTask{restore: task})
	select {
	case err := <-task.done:
		if err != nil {
			r.fatal(err)
		}
		return err
	case <-r.shutdownCh:
		return ErrRaftShutdown
	}
}

// moveToSnapshot makes a snapshot the node's latest: its position, the point up to which
// entries count as handed to the FSM, and both configurations. Log, commit index and applied
// index are the caller's.
func (r *Raft) moveToSnapshot(index, term uint64, config Configuration, configIndex uint64) {
	r.snapshot.Store(&indexTerm{index: index, term: term})
	r.fsmQueuedIndex = index
	r.setConfigurations(snapshotConfigurations(config, configIndex))
}
