package raft

import (
	"errors"
	"fmt"
)

// DamagedSnapshotReporter is an optional interface of a SnapshotStore that can tell the index
// of stored snapshots it leaves out of List because their metadata does not verify
// (FileSnapshotStore reads the index from the snapshot's directory name). Start-up uses it to
// know how far the node's state reached before the damage: falling back to an older snapshot
// is safe only if the log still reaches at least that far. NewRaft calls it once, before the
// node starts.
type DamagedSnapshotReporter interface {
	DamagedSnapshotIndexes() ([]uint64, error)
}

// logBounds is what start-up knows of the log store.
type logBounds struct{ first, last uint64 }

// readLogBounds reads the first and last index of the log store.
func (r *Raft) readLogBounds() (logBounds, error) {
	first, err := r.logs.FirstIndex()
	if err != nil {
		return logBounds{}, fmt.Errorf("raft: reading first log index: %w", err)
	}
	last, err := r.logs.LastIndex()
	if err != nil {
		return logBounds{}, fmt.Errorf("raft: reading last log index: %w", err)
	}
	return logBounds{first: first, last: last}, nil
}

// joins says whether the log can continue a snapshot at index: it is empty, or it holds the
// entry right after the snapshot (or reaches back further).
func (b logBounds) joins(index uint64) bool {
	return b.last == 0 || b.first <= index+1
}

// restoreSnapshotOnStart restores the newest snapshot that opens cleanly and that the log
// joins, falling back to older ones when a newer one is corrupt. Falling back is safe only
// when nothing the node held is lost: the log must join the older snapshot (no gap of
// compacted entries between them) and reach at least as far as every newer snapshot that was
// skipped. Otherwise the node refuses to start with ErrStorageDamaged: it may have
// acknowledged entries it no longer holds, and must be rebuilt from the cluster (see
// docs/operating.md) rather than vote or acknowledge as the voter it was.
func (r *Raft) restoreSnapshotOnStart() error {
	bounds, err := r.readLogBounds()
	if err != nil {
		return err
	}
	if err := r.undoUnconfirmedSnapshot(bounds); err != nil {
		return err
	}
	metas, err := r.listSnapshots()
	if err != nil {
		return fmt.Errorf("raft: listing snapshots: %w", err)
	}
	reached, err := r.damagedSnapshotIndex() // the furthest index a skipped snapshot held
	if err != nil {
		return err
	}
	for _, meta := range metas {
		if !bounds.joins(meta.Index) {
			return fmt.Errorf("%w: the log starts at index %d but the newest usable snapshot %s ends at %d: entries %d to %d are lost",
				ErrStorageDamaged, bounds.first, meta.ID, meta.Index, meta.Index+1, bounds.first-1)
		}
		if !r.conf.NoSnapshotRestoreOnStart {
			if err := r.restoreStoredSnapshot(meta); err != nil {
				r.logger.Error("cannot restore snapshot, trying an older one", "snapshot", meta.ID, "error", err)
				reached = max(reached, meta.Index)
				continue
			}
		}
		if lost := max(reached, meta.Index); bounds.last < lost && meta.Index < lost {
			return fmt.Errorf("%w: a damaged snapshot reached index %d but the log ends at %d and the usable snapshot %s at %d",
				ErrStorageDamaged, lost, bounds.last, meta.ID, meta.Index)
		}
		r.adoptSnapshot(meta)
		return r.reconcileLogWithSnapshot(bounds, meta)
	}
	// No snapshot is usable. The log alone will do if it starts at the beginning and reaches
	// as far as the damaged snapshots did.
	if len(metas) > 0 || reached > 0 {
		if bounds.first == 1 && bounds.last >= reached {
			r.logger.Warn("no snapshot could be restored; starting from the log, which holds every entry", "index", bounds.last)
			return nil
		}
		return fmt.Errorf("%w: none of the %d stored snapshots could be restored and the log [%d, %d] does not hold everything they did",
			ErrStorageDamaged, len(metas), bounds.first, bounds.last)
	}
	if bounds.first > 1 {
		return fmt.Errorf("%w: the log starts at index %d but there is no snapshot: entries 1 to %d are lost",
			ErrStorageDamaged, bounds.first, bounds.first-1)
	}
	return nil
}

// damagedSnapshotIndex returns the highest index of a snapshot the store skipped as damaged,
// when the store can tell.
func (r *Raft) damagedSnapshotIndex() (uint64, error) {
	rep, ok := r.snaps.(DamagedSnapshotReporter)
	if !ok {
		return 0, nil
	}
	idx, err := rep.DamagedSnapshotIndexes()
	if err != nil {
		return 0, fmt.Errorf("raft: listing damaged snapshots: %w", err)
	}
	var top uint64
	for _, i := range idx {
		r.logger.Error("snapshot metadata does not verify", "index", i)
		top = max(top, i)
	}
	return top, nil
}

// restoreStoredSnapshot opens a stored snapshot and restores the FSM from it.
func (r *Raft) restoreStoredSnapshot(meta *SnapshotMeta) error {
	_, rc, err := r.snaps.Open(meta.ID)
	if err != nil {
		return err
	}
	if err := restoreVerified(r.fsm, rc); err != nil {
		return err
	}
	r.logger.Info("restored snapshot", "snapshot", meta.ID, "index", meta.Index)
	return nil
}

// reconcileLogWithSnapshot makes the log agree with the snapshot the node starts from, for the
// states a crash can leave (issue 10, bug 3):
//   - the log ends before the snapshot: a follower crashed between storing an installed
//     snapshot and discarding its log, or a leader applied and snapshotted entries that
//     followers had committed while its own write of them was still in flight. The snapshot
//     holds only committed entries, so every entry of the log is covered by it;
//   - the log holds the snapshot's index with another term: a follower crashed before
//     discarding a conflicting log after an InstallSnapshot (Raft paper, Figure 13, step 7).
//
// In both cases the whole log is deleted, so the log store's ordering rule (the next batch
// continues the log, or starts anywhere on an empty log) accepts the entry after the
// snapshot. A log that holds the snapshot's entry with its term is kept.
func (r *Raft) reconcileLogWithSnapshot(b logBounds, meta *SnapshotMeta) error {
	if b.last == 0 {
		return nil
	}
	reason := ""
	switch {
	case b.last < meta.Index:
		reason = "the log ends before the snapshot"
	case b.first <= meta.Index:
		var l Log
		if err := r.logs.GetLog(meta.Index, &l); err != nil {
			if errors.Is(err, ErrLogNotFound) {
				return fmt.Errorf("%w: log [%d, %d] has no entry %d: %w", ErrStorageDamaged, b.first, b.last, meta.Index, err)
			}
			return fmt.Errorf("raft: reading log entry %d at the snapshot: %w", meta.Index, err)
		}
		if l.Term == meta.Term {
			return nil
		}
		reason = fmt.Sprintf("the log holds term %d at the snapshot's index, the snapshot term %d", l.Term, meta.Term)
	default:
		return nil // the log starts right after the snapshot
	}
	r.logger.Warn("discarding a log that does not continue the snapshot: "+reason,
		"index", meta.Index, "term", meta.Term)
	if err := r.logs.DeleteRange(b.first, b.last); err != nil {
		return fmt.Errorf("raft: discarding log [%d, %d] behind snapshot %s: %w", b.first, b.last, meta.ID, err)
	}
	return nil
}

// checkTermCoversState refuses to start a node whose stable store holds a term below the term
// of its snapshot or of its last log entry. A node persists a term before it stores anything
// of that term, so this means the stable store was lost or rolled back (a wiped or restored
// directory, say) while the log or the snapshots survived: the node no longer knows its term
// or whom it voted for, and could vote twice in one term.
func (r *Raft) checkTermCoversState() error {
	term := r.currentTerm.Load()
	_, snapTerm := r.snapshotIndexTerm()
	lastIndex, lastTerm := r.lastLogIndexTerm()
	if held := max(snapTerm, lastTerm); term < held {
		return fmt.Errorf("%w: the stable store holds term %d but the log (last index %d) and snapshot hold term %d: term and vote were lost",
			ErrStorageDamaged, term, lastIndex, held)
	}
	return nil
}

// adoptSnapshot makes a restored snapshot the node's starting point.
func (r *Raft) adoptSnapshot(meta *SnapshotMeta) {
	r.moveToSnapshot(meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex)
	r.applied.Store(&indexTerm{index: meta.Index, term: meta.Term})
	r.fsmConfig, r.fsmConfigIndex = meta.Configuration.Clone(), meta.ConfigurationIndex
	r.commitIndex.Store(meta.Index)
}
