package raft

import (
	"time"
)

// Linearizable reads (Raft paper, section 8; Ongaro's thesis, section 6.4): a leader may
// answer a read from its FSM without writing to the log if it (1) has committed an entry of
// its own term, so its commit index is at least every index committed before it led; (2)
// takes that commit index as the read index; (3) confirms with a quorum that it is still
// leader; and (4) waits until its FSM applied the read index.

// readFuture is returned by ReadIndex.
type readFuture struct {
	v *verifyFuture
	r *Raft
}

// ReadIndex confirms this node's leadership and waits until its FSM has applied everything
// committed at the time of the call. Once Error returns nil, reading the FSM on this node is
// linearizable: the read sees every write that completed before ReadIndex was called. Index is
// the read index. timeout bounds the whole wait (zero: until leadership is lost or shutdown).
// Elsewhere than on the leader it fails with ErrNotLeader.
func (r *Raft) ReadIndex(timeout time.Duration) IndexFuture {
	v := &verifyFuture{voted: make(map[ServerID]bool), wantRead: true}
	v.init()
	v.shutdownCh = r.shutdownCh
	if timeout > 0 {
		v.deadline = time.Now().Add(timeout)
	}
	v.enqueued.Store(true)
	if err := r.sendLeaderRequest(v, v.deadline); err != nil {
		return errorFuture{err}
	}
	return &readFuture{v: v, r: r}
}

// Error waits for the leadership confirmation, then for the FSM to apply the read index.
func (f *readFuture) Error() error {
	if err := f.v.Error(); err != nil {
		return err
	}
	var timeout <-chan time.Time
	if !f.v.deadline.IsZero() {
		t := time.NewTimer(time.Until(f.v.deadline))
		defer t.Stop()
		timeout = t.C
	}
	for {
		notify := f.r.appliedNotify.Load()
		if idx, _ := f.r.appliedIndexTerm(); idx >= f.v.readIndex {
			return nil
		}
		select {
		case <-*notify:
		case <-timeout:
			return ErrTimeout
		case <-f.r.shutdownCh:
			return ErrRaftShutdown
		}
	}
}

// Index returns the read index; valid once Error returned nil.
func (f *readFuture) Index() uint64 { return f.v.readIndex }

// publishApplied records the FSM's progress and wakes everyone waiting for it. FSM goroutine
// only.
func (r *Raft) publishApplied(index, term uint64) {
	r.applied.Store(&indexTerm{index: index, term: term})
	next := make(chan struct{})
	old := r.appliedNotify.Swap(&next)
	close(*old)
}
