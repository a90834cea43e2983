package raft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Linearizable reads (Raft paper, section 8; Ongaro's thesis, section 6.4). A leader may
// answer a read from its FSM without writing to the log if it (1) has committed an entry of
// its own term, so its commit index is at least every index committed before it led; (2)
// takes that commit index as the read index; (3) confirms with a quorum that it is still
// leader; and (4) waits until its FSM applied the read index.
//
// Batching: reads on a node queue for its read batcher goroutine, which hands each batch to
// the leader's main loop in one request (or sends it to the leader in one RPC). The leader
// runs at most one confirmation round for reads at a time; reads that arrive while a round is
// in flight queue and share the next round, so a burst of any size costs one round (two when
// it arrives while another round is already out). Lease reads on the leader skip all of it:
// the caller's goroutine checks the published lease itself.
//
// Followers and non-voters (thesis, section 6.4.1): a read asks the leader for a read index
// with one ReadIndex RPC, then waits until the local FSM applied that index. Every entry up to
// it is committed, and committed entries are the same on every node, so the local FSM then
// reflects every write acknowledged before the read began, whatever leader changes happen
// meanwhile. A single forwarder goroutine per node sends one RPC at a time, carrying every
// read that queued while the previous one was out.
//
// Leases (thesis, section 6.4.1, with the clock assumption written out in Config.MaxClockDrift):
// a follower that acknowledged a heartbeat of the leader refuses to vote for another
// candidate for HeartbeatTimeout (leader stickiness, election.go). So once a quorum acknowledged
// heartbeats the leader sent at time s or later, no other leader can be elected before
// s + HeartbeatTimeout on those followers' clocks, which is at least s + HeartbeatTimeout -
// MaxClockDrift on the leader's. Until then the leader answers reads without a round. The
// lease is not used while a membership change is uncommitted, and only acknowledgements of
// heartbeats sent after the latest change count; a leadership transfer gives it up for the
// rest of the term before TimeoutNow can be sent (its election skips stickiness); a new
// leader serves no lease read before an entry of its term committed and HeartbeatTimeout
// passed since it won, by when any lease of an earlier leader has run out. Every time is read
// on the monotonic clock.

// readKind says how a read got its index: the label of the read metrics.
type readKind uint8

const (
	readKindRound         readKind = iota // leader, confirmation round
	readKindLease                         // leader, lease
	readKindFollower                      // follower or non-voter, the leader's round
	readKindFollowerLease                 // follower or non-voter, the leader's lease
	readKinds
)

func (k readKind) String() string { return readKindLabels[k][0].Value }

// closedCh is the done channel of reads resolved on the caller's goroutine (lease reads):
// they need no channel of their own.
var closedCh = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// readForwardBuffer is how many follower reads may queue for the forwarder while its RPC is
// out; a burst of that size queues without a hand-off each. Past it callers wait (bounded by
// their context or deadline).
const readForwardBuffer = 1024

// ReadOption adjusts one read; see WithLease.
type ReadOption func(*readOptions)

type readOptions struct {
	lease bool // the caller accepts an answer from the lease
}

// WithLease overrides Config.LeaseReads for one read. With true the leader answers from its
// lease when the lease holds and runs a confirmation round when it does not; with false it
// always runs a round. See Config.MaxClockDrift for what a lease assumes.
func WithLease(allow bool) ReadOption {
	if allow {
		return leaseOn
	}
	return leaseOff
}

// The two ReadOptions of WithLease, made once: an option costs a read no allocation.
var (
	leaseOn  ReadOption = func(o *readOptions) { o.lease = true }
	leaseOff ReadOption = func(o *readOptions) { o.lease = false }
)

// readFuture is one read: resolved with its read index by the leader's round or lease, or by
// the forwarder with the leader's answer; Error then waits for the local FSM.
type readFuture struct {
	deferError
	r *Raft
	readOptions

	// Written inside the deferError's once, before done is closed.
	readIndex uint64
	kind      readKind

	// waitOnce makes every Error call return the first result.
	waitOnce sync.Once
	result   error
}

// ReadIndex is ReadIndexContext bounded by timeout instead of a context (zero: until the read
// fails or the node shuts down), with Config.LeaseReads deciding whether a lease may answer.
// When the timeout passes, Error returns ErrEnqueueTimeout or ErrTimeout.
func (r *Raft) ReadIndex(timeout time.Duration) IndexFuture {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	f := &readFuture{r: r, readOptions: readOptions{lease: r.conf.LeaseReads}}
	return r.startRead(context.Background(), f, deadline)
}

// ReadIndexContext makes the local FSM current for a linearizable read, on any node. Once
// Error returns nil, reading this node's FSM sees every write that completed (was
// acknowledged to any client) before ReadIndexContext was called. Index is the read index.
//
// On the leader it confirms leadership with a round of heartbeats shared by every read that
// queued meanwhile (or, with a lease, none), after an entry of its term committed. On a
// follower or non-voter it asks the leader for a read index with one ReadIndex RPC, shared by
// every read queued on this node meanwhile; a follower that knows no leader, cannot reach it,
// or whose leader cannot confirm fails with an error wrapping ErrNoLeader. Either way it then
// waits until this node's FSM applied the read index. A node whose FSM holds a Restore the
// cluster has not committed yet (a leader's own, or one installed from it) serves no read
// until the restore committed or was replaced: the reads wait meanwhile.
//
// When ctx ends first, Error returns an error matching ctx.Err() and ErrEnqueueTimeout (the
// read never reached the leader) or ErrTimeout. A read changes nothing, so retrying is always
// safe: every attempt gets an index confirmed after it started.
func (r *Raft) ReadIndexContext(ctx context.Context, opts ...ReadOption) IndexFuture {
	f := &readFuture{r: r, readOptions: readOptions{lease: r.conf.LeaseReads}}
	for _, opt := range opts {
		opt(&f.readOptions) // in the future, which is on the heap anyway: no allocation
	}
	return r.startRead(ctx, f, time.Time{})
}

// startRead answers a read from the lease on the caller's goroutine when it allows a lease
// and the lease holds (a lease read touches only atomics: no channel, no other goroutine),
// or else queues it for the batcher, which hands every read queued meanwhile to the
// leader's main loop at once, or sends them to the leader in one RPC.
func (r *Raft) startRead(ctx context.Context, f *readFuture, deadline time.Time) IndexFuture {
	switch r.getState() {
	case Shutdown:
		return errorFuture{ErrRaftShutdown}
	case Leader:
		if f.lease {
			if index, ok := r.leaseReadIndex(); ok {
				f.readIndex, f.kind = index, readKindLease
				f.done = closedCh
				f.once.Do(func() {}) // resolved: a later respond or complete does nothing
				f.ctx, f.deadline, f.shutdownCh = ctx, deadline, r.shutdownCh
				return f
			}
		}
	}
	f.init(r.shutdownCh, deadline, ctx)
	return r.forwardRead(f)
}

// Index returns the read index; valid once Error returned nil.
func (f *readFuture) Index() uint64 {
	if f.Error() != nil {
		return 0
	}
	return f.readIndex
}

// Error waits for the read index, then for this node's FSM to apply it.
func (f *readFuture) Error() error {
	f.waitOnce.Do(func() { f.result = f.waitApplied() })
	return f.result
}

// complete resolves the read with its index (or err); only the first call counts.
func (f *readFuture) complete(index uint64, kind readKind, err error) {
	f.once.Do(func() {
		f.readIndex, f.kind, f.err = index, kind, err
		close(f.done)
	})
}

// readBatch hands reads queued on the leader to its main loop in one request.
type readBatch []*readFuture

// serve queues the batch for the next confirmation round (answering lease reads at once).
func (b readBatch) serve(r *Raft) {
	for _, f := range b {
		r.queueRead(readWaiter{f: f}, f.lease)
	}
	r.maybeStartReadRound()
}

// reject is called by a main loop that is not the leader's: leadership moved after the
// batcher looked, so each read goes back to the batcher (to be sent to the new leader) if
// there is room.
func (b readBatch) reject(err error) {
	for _, f := range b {
		if errors.Is(err, ErrNotLeader) {
			select {
			case f.r.readForwardCh <- f:
				continue
			default:
			}
		}
		f.respond(err)
	}
}

// waitApplied waits for the read index, then for this node's FSM to apply it. A read whose
// index the FSM already applied (every read on a node that is not behind) returns without
// a timer, a channel or another goroutine.
func (f *readFuture) waitApplied() error {
	if err := f.deferError.Error(); err != nil {
		return err
	}
	r := f.r
	if r.readableAt(f.readIndex) {
		r.readCounts.add(f.kind)
		return nil
	}
	start := time.Now()
	timeout, ctxDone, stop := waitBounds(f.deadline, f.ctx)
	defer stop()
	for {
		notify := r.appliedNotify.Load()
		if r.readableAt(f.readIndex) {
			r.readCounts.add(f.kind)
			readApplyWaitMetric(f.kind, start)
			return nil
		}
		select {
		case <-*notify:
		case <-timeout:
			return ErrTimeout
		case <-ctxDone:
			return &wrappedErr{base: ErrTimeout, cause: f.ctx.Err()}
		case <-r.shutdownCh:
			return ErrRaftShutdown
		}
	}
}

// readableAt reports whether this node's FSM may serve a read at index: it applied the index
// and holds no Restore the cluster has not committed. While this node's snapshot is
// unconfirmed its FSM may hold a Restore the cluster never commits; reads wait until the mark
// is settled (confirmed, or replaced by the leader's snapshot), however far the FSM got.
func (r *Raft) readableAt(index uint64) bool {
	idx, _ := r.appliedIndexTerm()
	return idx >= index && r.unconfirmedIndex.Load() == 0
}

// forwardRead queues a read for the batcher goroutine.
func (r *Raft) forwardRead(f *readFuture) IndexFuture {
	if err := handOff(r.readForwardCh, f, f.deadline, f.ctx, r.shutdownCh); err != nil {
		return errorFuture{err}
	}
	return f
}

// runReadForwarder is the read batcher goroutine (one per node, started by NewRaft, exits on
// shutdown): it takes every read queued on this node as one batch, one batch at a time, and
// hands it to the main loop in one request when this node leads, or asks the leader for a
// read index with one RPC when it does not. Batching here keeps a burst of reads from costing
// the main loop one hand-off each. On the leader it takes nothing while a confirmation round
// is out (holdWhileRoundOut): a batch could only queue for the next round, and the reads
// that arrive meanwhile reach the main loop with the round's end in one hand-off instead of
// one per wake-up of this goroutine. It also reports the read counters (readCounter.flush) every
// readMetricsInterval.
func (r *Raft) runReadForwarder() {
	tick := time.NewTicker(readMetricsInterval)
	defer tick.Stop()
	defer r.readCounts.flush()
	var batch []*readFuture
	for {
		if !r.holdWhileRoundOut(tick.C) {
			return
		}
		batch = batch[:0]
		select {
		case f := <-r.readForwardCh:
			batch = append(batch, f)
		case <-tick.C:
			r.readCounts.flush()
			continue
		case <-r.shutdownCh:
			return
		}
		batch = r.takeQueuedReads(batch)
		r.forwardBatch(batch)
		clear(batch) // let the futures go
	}
}

// takeQueuedReads appends every read queued for the batcher right now to batch.
func (r *Raft) takeQueuedReads(batch []*readFuture) []*readFuture {
	for {
		select {
		case f := <-r.readForwardCh:
			batch = append(batch, f)
		default:
			return batch
		}
	}
}

// holdWhileRoundOut waits until the confirmation round this node has out, if any, is over,
// reporting the read counters on tick meanwhile; false on shutdown. The reads queued
// meanwhile stay queued: the goroutine that answers the round takes them into the hand-off
// that starts the next one (awaitReadRound), alone, so that a burst is not split between it
// and the batcher into two more rounds.
func (r *Raft) holdWhileRoundOut(tick <-chan time.Time) bool {
	round := r.readRoundOut.Load()
	if round == nil {
		return true
	}
	for {
		select {
		case <-round.over: // answered, the reads queued meanwhile handed on
			return true
		case <-tick:
			r.readCounts.flush()
		case <-r.shutdownCh:
			return false
		}
	}
}

// forwardBatch gets a read index for batch: from this node's main loop if it leads, else
// from the leader.
func (r *Raft) forwardBatch(batch []*readFuture) {
	live := make([]*readFuture, 0, len(batch))
	lease := true
	for _, f := range batch {
		if isDone(&f.deferError) {
			continue // its caller gave up
		}
		live = append(live, f)
		lease = lease && f.lease
	}
	if len(live) == 0 {
		return
	}
	if r.getState() == Leader {
		err := r.sendLeaderRequest(readBatch(live), time.Time{}, context.Background())
		if !errors.Is(err, ErrNotLeader) {
			if err != nil {
				failReads(live, err)
			}
			return
		}
		// Leadership moved on since the state check: ask the new leader.
	}
	leader := r.leader.Load()
	if leader.id == "" || leader.id == r.localID {
		failReads(live, fmt.Errorf("%w: no known leader", ErrNoLeader))
		return
	}
	req := &ReadIndexRequest{RPCHeader: r.header(), Term: r.currentTerm.Load(), Lease: lease, Reads: len(live)}
	var resp ReadIndexResponse
	start := time.Now()
	if err := r.trans.ReadIndex(leader.id, leader.addr, req, &resp); err != nil {
		failReads(live, fmt.Errorf("%w: leader %s: %w", ErrNoLeader, leader.id, err))
		return
	}
	rpcMetric("read_index", leader.id, start)
	readForwardMetric(len(live))
	kind := readKindFollower
	if resp.FromLease {
		kind = readKindFollowerLease
	}
	for _, f := range live {
		f.complete(resp.ReadIndex, kind, nil)
	}
}

func failReads(reads []*readFuture, err error) {
	for _, f := range reads {
		f.respond(err)
	}
}

// handleReadIndexRequest answers a follower's ReadIndex RPC on the main loop: on the leader
// it joins the next round (or is answered from the lease); elsewhere it is refused.
func (r *Raft) handleReadIndexRequest(rpc RPC, req *ReadIndexRequest) {
	r.readRequests.Add(1)
	hdr := r.header()
	if err := r.checkHeader(req.RPCHeader, &hdr); err != nil {
		rpc.Respond(nil, err)
		return
	}
	if r.leaderState == nil {
		rpc.Respond(nil, r.notLeaderErr())
		return
	}
	r.queueRead(readWaiter{rpc: rpc, hdr: hdr}, req.Lease)
	r.maybeStartReadRound()
}

// leaderReads is the leader's read state for one term. Main loop only.
type leaderReads struct {
	round  *readRound   // the confirmation in flight; nil when none
	queued []readWaiter // reads that arrived while it was in flight: they share the next one

	termStart  time.Duration // when this node became leader (monotonic, since clockBase)
	leaseFloor time.Duration // acknowledgements of heartbeats sent before it do not count
	revoked    bool          // a leadership transfer started: no lease for the rest of the term
}

// leaseView is what a lease check needs, published by the main loop (Raft.lease) so that
// lease reads on the leader never wait for the main loop. nil while no lease may be used:
// not leading, a membership change uncommitted, a transfer started.
type leaseView struct {
	startIndex uint64        // the term's first index: the commit index must reach it
	notBefore  time.Duration // termStart + HeartbeatTimeout: an earlier leader's lease is over
	floor      time.Duration // acknowledgements of heartbeats sent before it do not count
	quorum     int
	self       bool            // this node is a voter (it counts as acknowledging now)
	acks       []*atomic.Int64 // the other voters' replicators' ackedSend
	until      atomic.Int64    // the lease holds until then, as last computed (monotonic)
}

// readWaiter is a read on this node or a follower's ReadIndex request (with the header to
// answer it with).
type readWaiter struct {
	f   *readFuture
	rpc RPC
	hdr RPCHeader
}

// readRound is one confirmation shared by every read that queued before it started.
type readRound struct {
	v         *verifyFuture
	readIndex uint64       // the commit index when the round started
	waiters   []readWaiter // fixed before the round starts
	// over is closed by awaitReadRound once it answered the round and handed the reads
	// queued meanwhile on (or gave up on shutdown): until then the batcher takes nothing,
	// so those reads all go to the next round together.
	over chan struct{}
}

func (rd *leaderReads) start(now time.Duration) {
	rd.termStart, rd.leaseFloor = now, now
}

// resetLease makes the lease count only heartbeats sent from now on, and publishes the lease
// view for the latest configuration. Main loop, leader.
func (r *Raft) resetLease() {
	r.leaderState.reads.leaseFloor = r.monoNow()
	r.publishLease()
}

// revokeLease gives the lease up for the rest of the term. Main loop, leader.
func (r *Raft) revokeLease() {
	r.leaderState.reads.revoked = true
	r.lease.Store(nil)
}

// endReads fails every read still queued with err and withdraws the lease: the term ended.
func (r *Raft) endReads(ls *leaderState, err error) {
	r.lease.Store(nil)
	r.readRoundOut.Store(nil)
	for _, w := range ls.reads.queued {
		w.answer(0, 0, false, err)
	}
	ls.reads.queued = nil
}

// publishLease publishes the lease view of the current term and configuration, or nil when
// no lease may be used. Main loop, leader.
func (r *Raft) publishLease() {
	ls := r.leaderState
	latest := r.configurations.latest
	if ls.reads.revoked || r.restoring != nil || r.configurations.latestIndex != r.configurations.committedIndex {
		r.lease.Store(nil)
		return
	}
	v := &leaseView{
		startIndex: ls.commitment.startIndex,
		notBefore:  ls.reads.termStart + r.conf.HeartbeatTimeout,
		floor:      ls.reads.leaseFloor,
		quorum:     latest.quorumSize(),
	}
	for _, s := range latest.Servers {
		if s.Suffrage != Voter {
			continue
		}
		if s.ID == r.localID {
			v.self = true
		} else if repl, ok := ls.replicators[s.ID]; ok {
			v.acks = append(v.acks, &repl.ackedSend)
		}
	}
	r.lease.Store(v)
}

// answer resolves the waiter with a read index, or with err.
func (w readWaiter) answer(term, index uint64, lease bool, err error) {
	if w.f != nil {
		kind := readKindRound
		if lease {
			kind = readKindLease
		}
		w.f.complete(index, kind, err)
		return
	}
	if err != nil {
		w.rpc.Respond(nil, err)
		return
	}
	w.rpc.Respond(&ReadIndexResponse{RPCHeader: w.hdr, Term: term, ReadIndex: index, FromLease: lease}, nil)
}

// queueRead serves one read on the leader from the lease if allowed and held, or else queues
// it for the next confirmation round (the caller then calls maybeStartReadRound).
func (r *Raft) queueRead(w readWaiter, lease bool) {
	ls := r.leaderState
	if lease {
		if index, ok := r.leaseReadIndex(); ok {
			w.answer(ls.term, index, true, nil)
			return
		}
	}
	if w.f != nil && isDone(&w.f.deferError) {
		return // its caller gave up
	}
	ls.reads.queued = append(ls.reads.queued, w)
}

// maybeStartReadRound starts a confirmation round for the queued reads unless one is in
// flight (the queued reads then wait for it to finish: readRoundDone) or no entry of this
// term committed yet: until then the commit index may be behind what earlier leaders
// committed, and the term's first commit calls this again. The round's read index is the
// commit index as it starts.
func (r *Raft) maybeStartReadRound() {
	ls := r.leaderState
	if ls.reads.round != nil || len(ls.reads.queued) == 0 || r.commitIndex.Load() < ls.commitment.startIndex {
		return
	}
	v := newVerifyFuture(nil, nil)
	round := &readRound{v: v, readIndex: r.commitIndex.Load(), waiters: ls.reads.queued, over: make(chan struct{})}
	ls.reads.queued = nil
	ls.reads.round = round
	r.readRoundOut.Store(round)
	r.readRounds.Add(1)
	readRoundMetric(len(round.waiters))
	r.handleVerify(v)
	// One goroutine per round, at most one round at a time; it exits once the round
	// resolved (leaderCleanup fails it when the term ends) or on shutdown.
	r.goFunc(func() { r.awaitReadRound(ls, round) })
}

// awaitReadRound answers a round's reads once it resolved and tells the main loop to start
// the next one, handing it the reads queued on this node meanwhile (the batcher leaves them
// queued while a round is out): the main loop wakes once per round, and those reads wait
// for no other goroutine.
func (r *Raft) awaitReadRound(ls *leaderState, round *readRound) {
	defer close(round.over)
	select {
	case <-round.v.done:
	case <-r.shutdownCh:
		return // local reads see the shutdown themselves; the transport fails forwarded ones
	}
	for _, w := range round.waiters {
		w.answer(ls.term, round.readIndex, false, round.v.err)
	}
	next := readBatch(r.takeQueuedReads(nil))
	select {
	case r.leaderReqCh <- readRoundDone{ls: ls, round: round, next: next}:
	case <-ls.ctx.Done(): // the term ended, or the node stopped (ls.ctx ends with r.ctx)
		if r.stopping() {
			failReads(next, ErrRaftShutdown)
			return
		}
		next.reject(r.notLeaderErr()) // back to the batcher, for the next leader
	}
}

// readRoundDone tells the leader's main loop that a round finished, with the reads queued on
// this node while it was out.
type readRoundDone struct {
	ls    *leaderState
	round *readRound
	next  readBatch
}

func (d readRoundDone) serve(r *Raft) {
	if ls := r.leaderState; ls == d.ls && ls.reads.round == d.round {
		ls.reads.round = nil
		r.readRoundOut.Store(nil)
	}
	d.next.serve(r) // queues them and starts the next round if none is out
}

// reject: the term is over (leaderCleanup failed the round's reads); the queued reads go back
// to the batcher.
func (d readRoundDone) reject(err error) { d.next.reject(err) }

// leaseReadIndex returns the read index the lease allows, if this node leads and its lease
// holds. Safe from any goroutine: it reads only the published lease view and atomics. The
// index is the commit index at a moment the lease held, so no other leader existed then.
func (r *Raft) leaseReadIndex() (uint64, bool) {
	v := r.lease.Load()
	if v == nil || r.getState() != Leader {
		return 0, false
	}
	commit := r.commitIndex.Load()
	if commit < v.startIndex {
		return 0, false // the commit index may still lag what earlier leaders committed
	}
	now := r.monoNow()
	if now >= time.Duration(v.until.Load()) {
		until := r.computeLease(v, now)
		if until <= now {
			return 0, false
		}
		v.until.Store(int64(until))
	}
	return commit, true
}

// computeLease returns until when the lease of v holds: HeartbeatTimeout - MaxClockDrift after
// the newest heartbeat send time that a quorum of voters acknowledged (this node counting as
// now), but never before HeartbeatTimeout after this node won its election, so that an
// earlier leader's lease has run out. Zero when it does not hold.
func (r *Raft) computeLease(v *leaseView, now time.Duration) time.Duration {
	if now < v.notBefore || v.quorum == 0 {
		return 0
	}
	var buf [8]time.Duration
	acks := buf[:0]
	if v.self {
		acks = append(acks, now)
	}
	for _, a := range v.acks {
		if sent := time.Duration(a.Load()); sent >= v.floor {
			acks = append(acks, sent)
		}
	}
	if len(acks) < v.quorum {
		return 0
	}
	slices.SortFunc(acks, func(a, b time.Duration) int { return cmp.Compare(b, a) })
	return acks[v.quorum-1] + r.conf.HeartbeatTimeout - r.clockDrift()
}

// clockDrift is Config.MaxClockDrift, or its default.
func (r *Raft) clockDrift() time.Duration {
	if r.conf.MaxClockDrift > 0 {
		return r.conf.MaxClockDrift
	}
	return r.conf.HeartbeatTimeout / 10
}

// monoNow is the time since clockBase, on the monotonic clock.
func (r *Raft) monoNow() time.Duration { return time.Since(r.clockBase) }

// touchContact records that a leader (or a candidate we voted for) was heard from now.
func (r *Raft) touchContact() { r.lastContact.Store(int64(r.monoNow())) }

// sinceContact is how long ago touchContact last ran.
func (r *Raft) sinceContact() time.Duration {
	return r.monoNow() - time.Duration(r.lastContact.Load())
}

// publishApplied records the FSM's progress and wakes everyone waiting for it. FSM goroutine
// only.
func (r *Raft) publishApplied(index, term uint64) {
	r.applied.Store(&indexTerm{index: index, term: term})
	r.wakeAppliedWaiters()
}

// wakeAppliedWaiters wakes every read waiting in waitApplied to look again. Any goroutine:
// each channel is swapped out exactly once, so it is closed exactly once.
func (r *Raft) wakeAppliedWaiters() {
	next := make(chan struct{})
	old := r.appliedNotify.Swap(&next)
	close(*old)
}
