package raft

// The replicator's side of InstallSnapshot: sending the leader's snapshot to a peer that needs
// one. Runs on the peer's replication goroutine.

import (
	"errors"
	"fmt"
	"time"
)

// snapshotWarnInterval spaces the WARN lines of a peer that keeps refusing or failing
// snapshots; the retries in between log at DEBUG.
const snapshotWarnInterval = 30 * time.Second

// logSnapshotFailure logs a failed snapshot send at WARN at most once per
// snapshotWarnInterval (the retries come every backoff), at DEBUG otherwise; backOff then
// counts it (the line says the run's count with it).
func (s *replicator) logSnapshotFailure(peer ServerID, index uint64, err error, now time.Time) {
	failures := s.failures + 1
	if now.Sub(s.snapshotWarned) >= snapshotWarnInterval {
		s.r.logger.Warn("sending snapshot failed", "peer", string(peer), "index", index, "failures", failures, "error", err)
		s.snapshotWarned = now
		return
	}
	s.r.logger.Debug("sending snapshot failed", "peer", string(peer), "index", index, "failures", failures, "error", err)
}

// sendLatestSnapshot sends the newest snapshot to the peer (for a peer to reset, one newer
// than its unconfirmed snapshot: see snapshotToSend); false when the replicator should stop.
func (s *replicator) sendLatestSnapshot() bool {
	peer := s.peer.Load()
	version := s.ls.logVersion.Load()
	latest, err := s.snapshotToSend()
	if err != nil {
		s.r.logger.Error("peer needs a snapshot but none can be sent", "peer", string(peer.ID), "error", err)
		return s.backOff()
	}
	meta, rc, err := s.r.snaps.Open(latest.ID)
	if err != nil {
		s.r.logger.Error("opening snapshot to send failed", "peer", string(peer.ID), "error", err)
		return s.backOff()
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
		s.logSnapshotFailure(peer.ID, meta.Index, err, time.Now())
		return s.backOff()
	}
	rpcMetric("install_snapshot", peer.ID, start)
	if resp.Term > s.ls.term {
		s.notifyStepDown(resp.Term)
		return false
	}
	s.setContact()
	if !resp.Success {
		return s.backOff()
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
	// The replicator's context: the wait ends when the replicator stops.
	if err := s.r.SnapshotContext(s.ctx).Error(); err != nil && !errors.Is(err, ErrNothingNewToSnapshot) {
		return fmt.Errorf("raft: taking a snapshot to reset the peer: %w", err)
	}
	return nil
}
