package raft

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// replicator brings one peer's log up to date during one leader term. Its run goroutine owns
// nextIndex and matchIndex; its heartbeat goroutine sends empty AppendEntries on their own so
// they never queue behind a large request.
type replicator struct {
	r  *Raft
	ls *leaderState

	peer atomic.Pointer[Server] // main loop writes (address changes); goroutines read

	// Owned by the run goroutine.
	nextIndex    uint64
	failures     int    // consecutive failed attempts
	failureCause string // errorShape of the last failure
	// snapshotWarned is when a failed snapshot send was last logged at WARN (rate limit).
	snapshotWarned time.Time
	// resetAbove is the peer's unconfirmed snapshot when it asked to be reset (NeedSnapshot):
	// it gets a snapshot newer than that before anything else. Zero otherwise.
	resetAbove indexTerm

	// matchIndex is written by the run goroutine, or by the pipeline receiver while the run
	// goroutine waits for it.
	matchIndex atomic.Uint64

	// triggerCh is poked when new entries were dispatched (buffer 1, coalescing).
	triggerCh chan struct{}
	// done is closed when this peer's replication ends: the main loop stopped it (stop) when
	// the peer left the configuration, or the term ended, or the node stopped (its context
	// is a child of the term's). Every wait of both goroutines selects on it.
	done <-chan struct{}
	ctx  context.Context
	stop context.CancelFunc

	lastContact atomic.Int64 // monotonic nanos since r.clockBase of the last response in this term; both goroutines write

	// ackedSend is when (monotonic nanos since the node's clockBase) the newest heartbeat
	// this peer acknowledged in this term was sent; the lease counts from it. Written by the
	// heartbeat goroutine, read by the main loop.
	ackedSend atomic.Int64

	// Verify requests waiting for this peer's next heartbeat acknowledgement.
	verifyMu sync.Mutex
	verifies []*verifyFuture // guarded by verifyMu
	verifyCh chan struct{}   // buffer 1, coalescing: wakes the heartbeat goroutine
}

func newReplicator(r *Raft, ls *leaderState, peer Server, nextIndex uint64) *replicator {
	s := &replicator{
		r:         r,
		ls:        ls,
		nextIndex: nextIndex,
		triggerCh: make(chan struct{}, 1),
		verifyCh:  make(chan struct{}, 1),
	}
	s.ctx, s.stop = context.WithCancel(ls.ctx)
	s.done = s.ctx.Done()
	s.peer.Store(&peer)
	s.ackedSend.Store(math.MinInt64) // no acknowledgement yet
	// The lease starts with the term: a new leader is not deposed before it could reach
	// anyone.
	s.lastContact.Store(int64(r.monoNow()))
	return s
}

func (s *replicator) setPeer(p Server) { s.peer.Store(&p) }

// sinceContact is how long ago this peer last answered, on the monotonic clock: a wall-clock
// step must neither keep a cut-off leader in office nor depose a healthy one.
func (s *replicator) sinceContact() time.Duration {
	return s.r.monoNow() - time.Duration(s.lastContact.Load())
}

func (s *replicator) setContact() { s.lastContact.Store(int64(s.r.monoNow())) }

// trigger wakes the run goroutine without blocking.
func (s *replicator) trigger() {
	select {
	case s.triggerCh <- struct{}{}:
	default:
	}
}

// stopped reports whether this peer's replication ended (see done).
func (s *replicator) stopped() bool { return s.ctx.Err() != nil }

// wait blocks for d, or less if the replicator is stopped; false when stopped.
func (s *replicator) wait(d time.Duration) bool { return s.waitOrWake(d, nil) }

// waitOrWake blocks for d, or until wake fires (nil: never); false when the replicator was
// stopped meanwhile.
func (s *replicator) waitOrWake(d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-wake:
	case <-s.done:
	}
	return !s.stopped()
}

// notifyStepDown reports a higher term to the main loop.
func (s *replicator) notifyStepDown(term uint64) {
	select {
	case s.ls.stepDownCh <- term:
	default: // a report is already pending
	}
}

// backOff counts a failed attempt, which the caller logged, and pauses for the backoff the
// run of failures earned; false when the replicator stopped meanwhile.
func (s *replicator) backOff() bool {
	s.failures++
	return s.wait(backoff(s.failures, s.r.conf.HeartbeatTimeout))
}

// backoff is the pause after n consecutive failures to reach a peer: doubling from 10ms,
// capped at half a heartbeat timeout so a recovered peer is reached again promptly.
func backoff(n int, heartbeatTimeout time.Duration) time.Duration {
	return min(10*time.Millisecond<<min(n, 10), heartbeatTimeout/2)
}

// run replicates until stopped: on new entries, or every CommitTimeout so the peer learns the
// commit index.
func (s *replicator) run() {
	pipelineOK := true
	for {
		if !s.waitOrWake(s.r.conf.CommitTimeout, s.triggerCh) {
			return
		}
		if s.replicate() && pipelineOK {
			pipelineOK = s.runPipeline()
		}
	}
}

// replicate sends AppendEntries (or a snapshot) until the peer holds the whole log. It
// returns true when the peer is caught up.
func (s *replicator) replicate() bool {
	for !s.stopped() {
		if s.resetAbove.index != 0 {
			if !s.sendLatestSnapshot() {
				return false
			}
			continue
		}
		req, lastIndex, err := s.buildRequest(s.nextIndex, true)
		var resp AppendEntriesResponse
		switch {
		case errors.Is(err, errLogViewChanged):
			continue // the loop condition ends a finished term; a restore rebuilds
		case errors.Is(err, ErrLogNotFound):
			// The entries the peer needs were compacted away.
			if !s.sendLatestSnapshot() {
				return false
			}
			continue
		case err != nil:
			err = fmt.Errorf("building append entries: %w", err)
		default:
			err = s.sendAppend(req, &resp)
		}
		if err != nil {
			s.noteFailure(err)
			if !s.backOff() {
				return false
			}
			continue
		}
		if !s.handleResponse(req, &resp) {
			return false
		}
		if resp.Success && s.nextIndex > lastIndex {
			return true
		}
		if !resp.Success && !resp.NeedSnapshot && s.nextIndex > req.PrevLogIndex {
			// A refusal that moved nothing back would be sent again at once, forever: in
			// a synctest bubble that loop stops virtual time, elsewhere it burns a core.
			s.noteFailure(fmt.Errorf("raft: peer refused entry %d again", req.PrevLogIndex))
			if !s.backOff() {
				return false
			}
		}
	}
	return false
}

// sendAppend sends one AppendEntries to the peer.
func (s *replicator) sendAppend(req *AppendEntriesRequest, resp *AppendEntriesResponse) error {
	peer := s.peer.Load()
	start := time.Now()
	if err := s.r.trans.AppendEntries(peer.ID, peer.Address, req, resp); err != nil {
		return err
	}
	rpcMetric("append_entries", peer.ID, start)
	return nil
}

// handleResponse applies one AppendEntries response to nextIndex/matchIndex; false when the
// term is over for this node.
func (s *replicator) handleResponse(req *AppendEntriesRequest, resp *AppendEntriesResponse) bool {
	if resp.Term > s.ls.term {
		s.notifyStepDown(resp.Term)
		return false
	}
	s.noteSuccess()
	s.setContact()
	if resp.NeedSnapshot && !resp.Success {
		s.resetAbove = indexTerm{index: resp.SnapshotIndex, term: resp.SnapshotTerm}
		return true
	}
	if resp.Success {
		last := req.PrevLogIndex + uint64(len(req.Entries))
		s.advanceMatch(last)
		s.nextIndex = max(s.nextIndex, last+1)
		return true
	}
	if match := s.matchIndex.Load(); resp.LastLogIndex < match {
		s.forgetMatch(match, resp.LastLogIndex)
	}
	s.nextIndex = nextIndexAfterReject(req.PrevLogIndex, s.matchIndex.Load(), resp, s.leaderTermAt)
	return true
}

// forgetMatch handles a peer whose log ends at last, before the index match it acknowledged:
// it lost entries it had stored (its data directory was wiped, or a disk without fsync lost
// them). Its match index restarts from zero, so the repair starts where its log ends (a
// nextIndex kept above match would be refused forever) and its old acknowledgements no
// longer count toward commitment.
func (s *replicator) forgetMatch(match, last uint64) {
	peer := s.peer.Load().ID
	s.r.logger.Warn("peer lost entries it acknowledged; replicating its log again", "peer", string(peer), "acknowledged", match, "last_index", last)
	s.matchIndex.Store(0)
	s.ls.commitment.forget(peer)
}

// leaderTermAt reads the term of one of the leader's entries for the conflict search.
func (s *replicator) leaderTermAt(index uint64) (uint64, bool) {
	t, err := s.termAt(index)
	return t, err == nil
}

// nextIndexAfterReject picks the next index to try after a log-mismatch rejection of a
// request whose previous entry was prevIndex (Raft paper, end of section 5.3). A follower
// whose log is too short says where it ends; otherwise it names the term it has at prevIndex
// and that term's first index. If the leader has entries of that term, it resumes after its
// last one; if not, it skips the whole term. The result never passes prevIndex (so every
// round makes progress) and never goes below matchIndex+1.
func nextIndexAfterReject(prevIndex, matchIndex uint64, resp *AppendEntriesResponse, termAt func(uint64) (uint64, bool)) uint64 {
	next := resp.ConflictIndex
	if resp.ConflictTerm != 0 {
		// Terms never decrease along the log: binary search the last index <= prevIndex
		// with a term <= ConflictTerm.
		lo, hi := max(resp.ConflictIndex, 1), prevIndex
		found := uint64(0)
		for lo <= hi && hi > 0 {
			mid := lo + (hi-lo)/2
			t, ok := termAt(mid)
			if !ok {
				break
			}
			if t <= resp.ConflictTerm {
				if t == resp.ConflictTerm {
					found = mid
				}
				lo = mid + 1
			} else {
				hi = mid - 1
			}
		}
		if found > 0 {
			next = found + 1
		}
	}
	if next == 0 || resp.ConflictIndex == 0 && resp.ConflictTerm == 0 {
		next = resp.LastLogIndex + 1
	}
	next = min(next, prevIndex)
	return max(next, matchIndex+1, 1)
}

// termAt returns the term of the leader's entry at index: from the snapshot, the log tail,
// the term's cache or the log store.
func (s *replicator) termAt(index uint64) (uint64, error) {
	return s.r.termVia(index, func(i uint64) (*Log, error) { return s.ls.entry(s.r.logs, i) })
}

// errLogViewChanged reports that the leader's log changed under a request being built (the
// term ended, or a Restore replaced the log): the request is dropped, never sent.
var errLogViewChanged = errors.New("raft: leader log changed while a request was built")

// buildRequest builds the AppendEntries for entries from next on: up to the log tail, as many
// as MaxAppendEntries and MaxAppendEntriesBytes allow (at least one), or none when withEntries
// is false (a commit index update). It also returns the last log index it saw. An error
// wrapping ErrLogNotFound means the peer needs a snapshot.
//
// The request is one consistent view of this term's log, term and commit index: the reads
// are not atomic together (a lagging peer's entries come from the store one by one), so they
// are validated afterwards against ls.logVersion, which the main loop bumps before it changes
// the log in any way other than appending this term's entries (step-down, Restore). A change
// in between fails with errLogViewChanged, so a request mixing the logs of two terms, or
// built after the node left its term, never reaches the wire.
func (s *replicator) buildRequest(next uint64, withEntries bool) (*AppendEntriesRequest, uint64, error) {
	version := s.ls.logVersion.Load()
	if s.stopped() {
		return nil, 0, errLogViewChanged
	}
	lastIndex, _ := s.r.lastLogIndexTerm()
	if !withEntries {
		lastIndex = next - 1
	}
	req, err := s.readRequest(next, lastIndex)
	if s.ls.logVersion.Load() != version {
		return nil, 0, errLogViewChanged
	}
	return req, lastIndex, err
}

// readRequest reads what buildRequest validates.
func (s *replicator) readRequest(next, lastIndex uint64) (*AppendEntriesRequest, error) {
	req := &AppendEntriesRequest{
		RPCHeader:         s.r.header(),
		Term:              s.ls.term,
		PrevLogIndex:      next - 1,
		LeaderCommitIndex: s.r.commitIndex.Load(),
	}
	if next == 0 {
		return nil, fmt.Errorf("raft: next index 0 for peer %s", s.peer.Load().ID)
	}
	snapIndex, _ := s.r.snapshotIndexTerm()
	if req.PrevLogIndex < snapIndex {
		if first, err := s.r.logs.FirstIndex(); err != nil || first == 0 || first > next {
			return nil, fmt.Errorf("%w: entry %d compacted", ErrLogNotFound, next)
		}
	}
	var err error
	if req.PrevLogTerm, err = s.termAt(req.PrevLogIndex); err != nil {
		return nil, err
	}
	end := min(lastIndex, next+uint64(s.r.conf.MaxAppendEntries)-1)
	if end >= next {
		req.Entries = make([]*Log, 0, end-next+1)
	}
	// Cut by bytes too: a request never exceeds MaxAppendEntriesBytes, which NewRaft checked
	// against the transport's message limit, except for one entry alone.
	budget := byteBudget{maxEntries: s.r.conf.MaxAppendEntries, maxBytes: s.r.conf.MaxAppendEntriesBytes}
	for i := next; i <= end; i++ {
		e, err := s.ls.entry(s.r.logs, i)
		if err != nil {
			return nil, err
		}
		if !budget.admit(entryBytes(e)) {
			break
		}
		req.Entries = append(req.Entries, e)
	}
	return req, nil
}

// heartbeat keeps the peer's election timer from firing and answers verify requests. It runs
// on its own goroutine so a heartbeat never waits behind a large AppendEntries.
func (s *replicator) heartbeat() {
	interval := s.r.conf.HeartbeatTimeout / 10
	failures := 0
	for {
		if !s.waitOrWake(interval, s.verifyCh) {
			return
		}
		verifies := s.takeVerifies()
		peer := s.peer.Load()
		lastIndex, _ := s.r.lastLogIndexTerm()
		replicationLagMetric(peer.ID, lastIndex, s.matchIndex.Load())
		req := &AppendEntriesRequest{RPCHeader: s.r.header(), Term: s.ls.term}
		var resp AppendEntriesResponse
		start := time.Now()
		if err := s.r.trans.AppendEntries(peer.ID, peer.Address, req, &resp); err != nil {
			failures++
			if failures == 1 {
				s.r.logger.Warn("heartbeat failed", "peer", string(peer.ID), "error", err)
				s.r.observe(FailedHeartbeatObservation{PeerID: peer.ID})
			}
			s.putBackVerifies(verifies)
			if !s.wait(backoff(failures, s.r.conf.HeartbeatTimeout)) {
				return
			}
			continue
		}
		rpcMetric("heartbeat", peer.ID, start)
		if resp.Term > s.ls.term {
			s.notifyStepDown(resp.Term)
			return
		}
		if failures > 0 {
			s.r.logger.Info("heartbeats resumed", "peer", string(peer.ID))
			s.r.observe(ResumedHeartbeatObservation{PeerID: peer.ID})
			failures = 0
		}
		s.setContact()
		if resp.Term == s.ls.term {
			s.ackedSend.Store(int64(start.Sub(s.r.clockBase)))
		}
		for _, v := range verifies {
			v.vote(peer.ID)
		}
	}
}

func (s *replicator) addVerify(v *verifyFuture) {
	s.verifyMu.Lock()
	s.verifies = append(s.verifies, v)
	s.verifyMu.Unlock()
	select {
	case s.verifyCh <- struct{}{}:
	default:
	}
}

func (s *replicator) takeVerifies() []*verifyFuture {
	s.verifyMu.Lock()
	defer s.verifyMu.Unlock()
	v := s.verifies
	s.verifies = nil
	return v
}

func (s *replicator) putBackVerifies(v []*verifyFuture) {
	if len(v) == 0 {
		return
	}
	s.verifyMu.Lock()
	s.verifies = append(v, s.verifies...)
	s.verifyMu.Unlock()
}

// runPipeline replicates with many AppendEntries in flight while the peer keeps up. It
// returns to the plain mode on any failure (with nextIndex reset to matchIndex+1), and
// reports false when the transport has no pipeline so the caller stops asking.
func (s *replicator) runPipeline() bool {
	peer := s.peer.Load()
	pipe, err := s.r.trans.AppendEntriesPipeline(peer.ID, peer.Address)
	if err != nil {
		if !errors.Is(err, ErrPipelineUnsupported) {
			s.r.logger.Warn("opening pipeline failed", "peer", string(peer.ID), "error", err)
			return true
		}
		return false
	}
	s.r.logger.Debug("pipelining replication", "peer", string(peer.ID))
	failed := make(chan struct{})   // closed by the receiver when the pipeline must end
	recvStop := make(chan struct{}) // closed by the sender to stop the receiver
	recvDone := make(chan struct{})
	// The receiver applies responses in order; it exits when the pipeline fails or the
	// sender stops it.
	// window holds one token per request in flight: the sender puts one before each send,
	// the receiver takes one per response. Its buffer is the pipeline depth.
	window := make(chan struct{}, s.r.pipelineWindow())
	s.r.goFunc(func() {
		defer close(recvDone)
		s.pipelineReceive(pipe, window, failed, recvStop)
	})
	s.pipelineSend(pipe, window, failed)
	close(recvStop)
	_ = pipe.Close()
	<-recvDone
	s.nextIndex = s.matchIndex.Load() + 1
	return true
}

// pipelineSend sends new entries as they are dispatched, without waiting for responses, but
// with at most pipelineDepth requests in flight.
func (s *replicator) pipelineSend(pipe AppendPipeline, window chan struct{}, failed <-chan struct{}) {
	for {
		for {
			if !s.acquireWindow(window, failed) {
				return
			}
			// Read the log tail only now: what was dispatched while the window was full
			// goes out in this one request.
			if lastIndex, _ := s.r.lastLogIndexTerm(); s.nextIndex > lastIndex {
				<-window // nothing to send after all
				break
			}
			req, _, err := s.buildRequest(s.nextIndex, true)
			if err != nil {
				return // compaction, a read error or a changed log: the plain mode sorts it out
			}
			if len(req.Entries) == 0 {
				<-window // nothing to send after all
				break
			}
			if _, err := pipe.AppendEntries(req, new(AppendEntriesResponse)); err != nil {
				return
			}
			s.nextIndex = req.Entries[len(req.Entries)-1].Index + 1
		}
		timer := time.NewTimer(s.r.conf.CommitTimeout)
		select {
		case <-s.triggerCh:
		case <-timer.C:
			// Nothing new: send an empty request so the peer learns the commit index.
			if !s.acquireWindow(window, failed) {
				timer.Stop()
				return
			}
			req, _, err := s.buildRequest(s.nextIndex, false)
			if err == nil {
				_, err = pipe.AppendEntries(req, new(AppendEntriesResponse))
			}
			if err != nil {
				timer.Stop()
				return
			}
		case <-failed:
		case <-s.done:
		}
		timer.Stop()
		select {
		case <-failed:
			return
		default:
		}
		if s.stopped() {
			return
		}
	}
}

// pipelineDepth is how many AppendEntries a pipeline keeps in flight. A follower stores each
// request with its own write (one fsync), so an unbounded pipeline degenerates into one
// request, and one fsync, per entry once clients send steadily; a small window makes the
// entries dispatched meanwhile wait and travel together, while still hiding a network
// round trip.
const pipelineDepth = 2

// acquireWindow waits for room in the pipeline window; false when the pipeline or the
// replicator stops first.
func (s *replicator) acquireWindow(window chan struct{}, failed <-chan struct{}) bool {
	select {
	case window <- struct{}{}:
		// A select picks at random among ready cases: the window may have won over a stop
		// that had already happened.
		if s.stopped() {
			<-window
			return false
		}
		return true
	case <-failed:
	case <-s.done:
	}
	return false
}

// pipelineReceive consumes pipeline responses in order.
func (s *replicator) pipelineReceive(pipe AppendPipeline, window <-chan struct{}, failed chan<- struct{}, stop <-chan struct{}) {
	defer close(failed)
	for {
		select {
		case fut := <-pipe.Consumer():
			<-window // the sender put a token before sending this request
			if err := fut.Error(); err != nil {
				s.r.logger.Debug("pipelined append entries failed", "peer", string(s.peer.Load().ID), "error", err)
				return
			}
			resp := fut.Response()
			if resp.Term > s.ls.term {
				s.notifyStepDown(resp.Term)
				return
			}
			if !resp.Success {
				return
			}
			s.setContact()
			req := fut.Request()
			last := req.PrevLogIndex + uint64(len(req.Entries))
			s.advanceMatch(last)
		case <-stop:
			return
		}
	}
}

// advanceMatch records that the peer holds everything up to last and tells the commitment.
func (s *replicator) advanceMatch(last uint64) {
	if last <= s.matchIndex.Load() {
		return
	}
	s.matchIndex.Store(last)
	s.ls.commitment.match(s.peer.Load().ID, last)
}
