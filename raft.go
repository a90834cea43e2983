// Package raft is an embeddable implementation of the Raft consensus algorithm.
//
// A user implements FSM, builds a node with NewRaft over a LogStore, a StableStore, a
// SnapshotStore and a Transport, bootstraps a fresh cluster once with BootstrapCluster, and
// then calls Apply on the leader and waits on the returned future:
//
//	r, err := raft.NewRaft(conf, fsm, logStore, stableStore, snapStore, transport)
//	f := r.Apply(cmd, 2*time.Second)
//	if err := f.Error(); err != nil { /* ErrNotLeader, ErrLeadershipLost, ErrTimeout, ... */ }
//	resp := f.Response() // what fsm.Apply returned, after the entry was applied here
//
// # Goroutines
//
// Each node runs:
//   - the main loop, which alone owns the role, term, vote, log tail, configuration and commit
//     index, handles every incoming RPC and every public request (which arrive as typed
//     request structs carrying futures);
//   - while leader, one replication and one heartbeat goroutine per peer, and a log writer
//     that persists the leader's entries while they are already being sent (Ongaro's thesis,
//     section 10.2.1);
//   - the FSM goroutine, the only caller of the user's FSM;
//   - the snapshot goroutine, which takes snapshots and compacts the log.
//
// Values other goroutines need (role, term, indexes, leader) are published through atomics,
// so status calls never wait on the main loop or the disk.
//
// docs/design.md in the repository describes the design as built: every goroutine and what
// it owns, the write and read paths, elections, snapshots, the disk and wire formats and the
// crash model the tests use.
package raft

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Raft is one node of a cluster. Create it with NewRaft; every method is safe for concurrent
// use.
type Raft struct {
	// Immutable after NewRaft.
	conf      Config
	logger    hclog.Logger
	fsm       FSM
	logs      LogStore
	stable    StableStore
	snaps     SnapshotStore
	trans     Transport
	localID   ServerID
	localAddr ServerAddress
	// clockBase anchors every time this node keeps as an offset (lastContact, lease
	// acknowledgements): offsets from it are read on the monotonic clock, so a wall-clock
	// step never moves an election timer or a lease.
	clockBase time.Time
	// protocolVersion is the version this node's requests carry; it accepts requests in
	// [protocolMin, protocolMax].
	protocolVersion, protocolMin, protocolMax int

	published

	// Owned by the main loop.
	rng            *rand.Rand
	snapshotRng    *rand.Rand // owned by the snapshot goroutine
	votedTerm      uint64
	votedFor       ServerID
	configurations configurations
	fsmQueuedIndex uint64 // the highest committed index handed to the FSM goroutine
	// recent holds the entries a follower stored and has not handed to the FSM yet, so they
	// are applied as decoded instead of read back; bounded by MaxInflightBytes, the most the
	// leader keeps on the way to it.
	recent      *logCache
	leaderState *leaderState
	// protocolWarnAt is when a peer's unsupported protocol version was last logged.
	protocolWarnAt time.Time
	// transferElection is set when TimeoutNow told this node to run: its next election skips
	// pre-vote and asks voters to ignore their leader stickiness.
	transferElection bool
	// fence keeps a node that started without state from voting until it caught up
	// (catchup_fence.go).
	fence catchUpFence

	// Requests into the main loop.
	rpcCh <-chan RPC
	// applyCh has a buffer of MaxAppendEntries with BatchApplyCh, so a burst of concurrent
	// Apply calls queues without a hand-off each and the leader drains it as one batch.
	applyCh chan *logFuture
	// leaderReqCh (see leaderRequest) and bootstrapCh are unbuffered: their callers wait for
	// the main loop anyway.
	leaderReqCh chan leaderRequest
	bootstrapCh chan *bootstrapFuture

	// unconfirmed is the node's snapshot while the cluster may not have committed it (see
	// markUnconfirmedSnapshot); zero otherwise. Mirrored durably under
	// keyUnconfirmedSnapshot. Main loop only (NewRaft sets it before the loop starts).
	unconfirmed indexTerm
	// undone lists the stored snapshots that were undone (undoUnconfirmedSnapshot,
	// restoreStepDone), skipped by listSnapshots. Written by start-up and the main loop,
	// read by replication goroutines.
	undone atomic.Pointer[[]indexTerm]
	// restoring is the Restore in progress on this node, or nil. Main loop only.
	restoring *leaderRestore
	// resetTerm is the term in which this node found that its leader's log contradicts its
	// unconfirmed snapshot and asked to be reset from the leader's snapshot (see resetting);
	// zero if none. Main loop only.
	resetTerm uint64

	// install is the snapshot this follower is receiving and restoring, or nil. Main loop
	// only.
	install *installState

	// readForwardCh carries reads (other than lease reads answered on the spot) to the read
	// batcher goroutine; see readForwardBuffer for its size.
	readForwardCh chan *readFuture
	// readRounds counts the leader's read confirmation rounds and readRequests the
	// ReadIndex RPCs it received; for tests.
	readRounds   atomic.Uint64
	readRequests atomic.Uint64
	// lease is the leader's lease view, published by the main loop (read.go).
	lease atomic.Pointer[leaseView]
	// readRoundOut is the leader's read confirmation round in flight, published by the main
	// loop for the read batcher (nil: none).
	readRoundOut atomic.Pointer[readRound]
	// readCounts counts successful reads by kind for the metrics.
	readCounts readCounter

	// transfer is the leadership transfer this node started as leader, from the request
	// until it is settled (transfer.go); nil if none. Main loop only.
	transfer *transferState

	obs observers

	// fsmq carries committed entries and restores to the FSM goroutine in log order; the
	// main loop never blocks on it (see fsmQueue).
	fsmq *fsmQueue

	// fsmSnapshotCh carries snapshot requests from the snapshot goroutine to the FSM
	// goroutine; userSnapshotCh carries Snapshot calls to the snapshot goroutine. Both are
	// unbuffered: the requester waits for the answer anyway.
	fsmSnapshotCh  chan *fsmSnapshotRequest
	userSnapshotCh chan *userSnapshotFuture

	// Owned by the FSM goroutine (set before it starts): the configuration as of the last
	// applied entry, recorded in snapshots; each batch of committed entries carries it.
	fsmConfig      Configuration
	fsmConfigIndex uint64

	// leaderCh reports leadership changes to LeaderCh readers. Buffer of one, newest wins.
	leaderCh chan bool

	shutdownCh chan struct{}
	// ctx is done once shutdownCh is closed: the root of the leader's context chain (node,
	// term, peer; see leaderState.ctx), so a replicator waits on one channel.
	ctx           context.Context
	cancelCtx     context.CancelFunc
	shutdownOnce  sync.Once
	shutdownCause atomic.Pointer[error]
	wg            sync.WaitGroup
}

// NewRaft builds a node from its stores and starts it. It recovers term, vote, log and
// configuration from the stores and restores the newest snapshot into fsm. A node of a new
// cluster stays a follower without a configuration until BootstrapCluster is called on it (or
// on another node that then adds it).
func NewRaft(conf *Config, fsm FSM, logs LogStore, stable StableStore, snaps SnapshotStore, trans Transport) (*Raft, error) {
	if err := ValidateConfig(conf); err != nil {
		return nil, err
	}
	if fsm == nil || logs == nil || stable == nil || snaps == nil || trans == nil {
		return nil, fmt.Errorf("%w: fsm, log store, stable store, snapshot store and transport are all required", ErrInvalidConfig)
	}
	if err := validateForTransport(conf, trans); err != nil {
		return nil, err
	}
	logger := conf.Logger
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info})
	}
	logger = logger.With("server", string(conf.LocalID))
	seed := conf.RandSeed
	if seed == 0 {
		seed = rand.Int63() // the global source is randomly seeded
	}
	r := &Raft{
		conf:           *conf,
		logger:         logger,
		fsm:            fsm,
		logs:           logs,
		stable:         stable,
		snaps:          snaps,
		trans:          trans,
		localID:        conf.LocalID,
		localAddr:      trans.LocalAddr(),
		recent:         newLogCache(conf.MaxInflightBytes),
		clockBase:      time.Now(),
		rng:            rand.New(rand.NewSource(seed)),
		snapshotRng:    rand.New(rand.NewSource(seed + 1)),
		rpcCh:          trans.Consumer(),
		leaderReqCh:    make(chan leaderRequest),
		bootstrapCh:    make(chan *bootstrapFuture),
		fsmq:           newFSMQueue(fsmBacklogBatches*conf.MaxAppendEntries, fsmBacklogBytesBatches*conf.MaxAppendEntriesBytes),
		fsmSnapshotCh:  make(chan *fsmSnapshotRequest),
		userSnapshotCh: make(chan *userSnapshotFuture),
		leaderCh:       make(chan bool, 1),
		readForwardCh:  make(chan *readFuture, readForwardBuffer),
		shutdownCh:     make(chan struct{}),
	}
	r.ctx, r.cancelCtx = context.WithCancel(context.Background())
	r.protocolVersion, r.protocolMin, r.protocolMax = conf.protocolRange()
	if conf.BatchApplyCh {
		r.applyCh = make(chan *logFuture, conf.MaxAppendEntries)
	} else {
		r.applyCh = make(chan *logFuture)
	}
	if err := r.recover(); err != nil {
		return nil, err
	}
	r.goFunc(r.run)              // main loop: exits on shutdown
	r.goFunc(r.runFSM)           // FSM goroutine: exits on shutdown
	r.goFunc(r.runSnapshots)     // snapshot goroutine: exits on shutdown
	r.goFunc(r.runReadForwarder) // read forwarder: exits on shutdown
	return r, nil
}

// goFunc starts a goroutine tied to the node's WaitGroup; Shutdown waits for all of them.
func (r *Raft) goFunc(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// recover loads term, vote, snapshot, log tail and configuration from the stores.
func (r *Raft) recover() error {
	term, err := r.stable.GetUint64(keyCurrentTerm)
	if err != nil {
		return fmt.Errorf("raft: reading current term: %w", err)
	}
	voteBytes, err := r.stable.Get(keyLastVote)
	if err != nil {
		return fmt.Errorf("raft: reading last vote: %w", err)
	}
	if r.votedTerm, r.votedFor, err = decodeVote(voteBytes); err != nil {
		return err
	}
	r.currentTerm.Store(term)
	r.applied.Store(&indexTerm{})
	notify := make(chan struct{})
	r.appliedNotify.Store(&notify)
	r.snapshot.Store(&indexTerm{})
	r.leader.Store(&leaderInfo{})
	if err := r.loadSnapshotMarks(); err != nil {
		return err
	}
	if err := r.restoreSnapshotOnStart(); err != nil {
		return err
	}
	if err := r.loadUnconfirmedSnapshot(); err != nil {
		return err
	}
	r.unconfirmedIndex.Store(r.unconfirmed.index)
	if err := r.loadLastLog(); err != nil {
		return err
	}
	if err := r.checkTermCoversState(); err != nil {
		return err
	}
	if err := r.loadConfigurations(); err != nil {
		return err
	}
	if err := r.loadCatchUpFence(); err != nil {
		return err
	}
	r.touchContact()
	return nil
}

// loadLastLog publishes the last log entry's index and term from the store (or the
// snapshot's when the log is empty).
func (r *Raft) loadLastLog() error {
	last, err := r.logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft: reading last log index: %w", err)
	}
	snapIndex, snapTerm := r.snapshotIndexTerm()
	if last == 0 || last < snapIndex {
		r.lastLog.Store(&indexTerm{index: snapIndex, term: snapTerm})
		return nil
	}
	var l Log
	if err := r.logs.GetLog(last, &l); err != nil {
		return fmt.Errorf("raft: reading last log entry %d: %w", last, err)
	}
	r.lastLog.Store(&indexTerm{index: last, term: l.Term})
	return nil
}

// loadConfigurations rebuilds the configurations from the snapshot and the log after it.
func (r *Raft) loadConfigurations() error {
	first, err := r.logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft: reading first log index: %w", err)
	}
	last, _ := r.lastLogIndexTerm()
	snapIndex, _ := r.snapshotIndexTerm()
	start := max(first, snapIndex+1)
	if first == 0 {
		start = last + 1
	}
	return r.rescanConfigurations(start)
}

// run is the main loop: it runs the loop of the current role until shutdown.
func (r *Raft) run() {
	defer r.logger.Info("main loop stopped")
	defer r.abandonRestore()
	for {
		select {
		case <-r.shutdownCh:
			r.setState(Shutdown)
			return
		default:
		}
		switch r.getState() {
		case Follower:
			r.runFollower()
		case Candidate:
			r.runCandidate()
		case Leader:
			r.runLeader()
		case Shutdown:
			return
		}
	}
}

func (r *Raft) setState(s RaftState) {
	old := r.getState()
	if old == s {
		return
	}
	r.state.Store(uint32(s))
	roleChanged(s)
	r.observe(s)
	if old == Leader || s == Leader {
		r.notifyLeadership(s == Leader)
	}
}

// notifyLeadership tells LeaderCh and Config.NotifyCh readers; it never blocks the main loop.
func (r *Raft) notifyLeadership(isLeader bool) {
	select {
	case r.leaderCh <- isLeader:
	default:
		// A stale value is waiting: replace it with the newest.
		select {
		case <-r.leaderCh:
		default:
		}
		select {
		case r.leaderCh <- isLeader:
		default:
		}
	}
	if r.conf.NotifyCh != nil {
		select {
		case r.conf.NotifyCh <- isLeader:
		default:
			r.logger.Warn("notify channel full, leadership change dropped", "state", r.getState().String())
		}
	}
}

func (r *Raft) setLeader(id ServerID, addr ServerAddress) {
	old := r.leader.Load()
	if old.id == id && old.addr == addr {
		return
	}
	r.leader.Store(&leaderInfo{id: id, addr: addr})
	if id != "" {
		r.logger.Info("leader known", "leader", string(id), "term", r.currentTerm.Load())
	}
	r.observe(LeaderObservation{LeaderID: id, LeaderAddr: addr, Term: r.currentTerm.Load()})
}

// setCurrentTerm persists a new term before anything acts on it; a persistence failure
// stops the node, since a node that cannot remember its term must not take part.
func (r *Raft) setCurrentTerm(term uint64) bool {
	if err := r.stable.SetUint64(keyCurrentTerm, term); err != nil {
		r.fatal(fmt.Errorf("raft: persisting term %d: %w", term, err))
		return false
	}
	r.currentTerm.Store(term)
	return true
}

// persistVote records the vote for this term durably before it is granted.
func (r *Raft) persistVote(term uint64, candidate ServerID) bool {
	if err := r.stable.Set(keyLastVote, encodeVote(term, candidate)); err != nil {
		r.fatal(fmt.Errorf("raft: persisting vote in term %d: %w", term, err))
		return false
	}
	r.votedTerm, r.votedFor = term, candidate
	return true
}

// fatal stops the node after an unrecoverable local failure (the disk).
func (r *Raft) fatal(err error) {
	r.logger.Error("stopping node after a local failure", "error", err)
	r.shutdownCause.CompareAndSwap(nil, &err)
	r.shutdownOnce.Do(r.closeShutdown)
	// Peers must not keep waiting on a node that stopped answering.
	if cerr := r.trans.Close(); cerr != nil {
		r.logger.Warn("closing transport", "error", cerr)
	}
}

// stepDown moves to follower in term (persisting it if it is newer). A leader first stops
// its replication and fails its in-flight requests, so nothing of the old term keeps running
// when the follower code touches the log.
func (r *Raft) stepDown(term uint64, leaderErr error) bool {
	if term > r.currentTerm.Load() {
		if !r.setCurrentTerm(term) {
			return false
		}
	}
	if r.leaderState != nil {
		r.leaderCleanup(leaderErr)
	}
	r.setState(Follower)
	return true
}

// runFollower waits for a leader; without contact for a randomized heartbeat timeout it
// starts an election, provided it is a voter.
func (r *Raft) runFollower() {
	r.logger.Info("entering follower state", "term", r.currentTerm.Load())
	timeout := r.followerTimeout()
	warned := false
	for r.getState() == Follower {
		select {
		case rpc := <-r.rpcCh:
			r.processRPC(rpc)
		case f := <-r.applyCh:
			f.respond(r.notLeaderErr())
		case req := <-r.leaderReqCh:
			req.reject(r.notLeaderErr())
		case b := <-r.bootstrapCh:
			r.handleBootstrap(b)
		case <-r.fsmq.room:
			r.applyCommitted(r.commitIndex.Load(), nil)
		case err := <-r.installDone():
			r.finishInstall(err)
		case err := <-r.restoreDone():
			r.restoreStepDone(err)
		case <-timeout:
			timeout = r.followerTimeout()
			since := r.sinceContact()
			if since < r.conf.HeartbeatTimeout || r.localRestoreBusy() {
				// A node receiving a snapshot heard from a leader when it started; the
				// transport bounds the transfer.
				continue
			}
			if !r.configurations.latest.isVoter(r.localID) {
				if !warned {
					r.logger.Warn("no leader heard and not a voter in the latest configuration; not starting an election")
					warned = true
				}
				continue
			}
			if r.catchingUp() {
				if !warned {
					r.logger.Warn("no leader heard, but this node started without state and has not caught up from a leader; not starting an election")
					warned = true
				}
				continue
			}
			if lost := r.leader.Load().id; lost != "" {
				r.logger.Warn("heartbeat timeout reached, starting election", "leader", string(lost))
			} else {
				// No leader known yet (a fresh start): an election is the normal next step.
				r.logger.Info("no leader known, starting election")
			}
			r.setLeader("", "")
			r.setState(Candidate)
		case <-r.shutdownCh:
			return
		}
	}
}

// followerTimeout arms the randomized heartbeat timeout.
func (r *Raft) followerTimeout() <-chan time.Time {
	return randomTimeout(r.rng, r.conf.HeartbeatTimeout)
}

// notLeaderErr names the leader this node knows of.
func (r *Raft) notLeaderErr() error {
	l := r.leader.Load()
	return &NotLeaderError{LeaderID: l.id, LeaderAddress: l.addr}
}

// handleBootstrap writes the first configuration on a node without state.
func (r *Raft) handleBootstrap(b *bootstrapFuture) {
	last, _ := r.lastLogIndexTerm()
	if r.currentTerm.Load() != 0 || last != 0 {
		b.respond(ErrCantBootstrap)
		return
	}
	entry, err := bootstrapStores(r.logs, r.stable, r.snaps, b.configuration)
	if err != nil {
		b.respond(err)
		return
	}
	r.currentTerm.Store(1)
	r.fence = catchUpFence{} // bootstrapStores cleared the durable mark
	r.publishCatchUpFence()
	r.lastLog.Store(&indexTerm{index: entry.Index, term: entry.Term})
	r.setConfigurations(r.configurations.withLatest(b.configuration, entry.Index))
	// Start the election clock afresh so a bootstrapped single node elects itself promptly
	// but the nodes of a larger cluster do not all fire at once.
	r.lastContact.Store(int64(r.monoNow() - r.conf.HeartbeatTimeout))
	b.respond(nil)
}

// ---- Public API ----

// BootstrapCluster bootstraps a running node that has no state yet; see the package-level
// BootstrapCluster.
func (r *Raft) BootstrapCluster(configuration Configuration) Future {
	b := &bootstrapFuture{configuration: configuration.Clone()}
	b.init(r.shutdownCh, time.Time{}, nil)
	select {
	case r.bootstrapCh <- b:
		return b
	case <-r.shutdownCh:
		return errorFuture{ErrRaftShutdown}
	}
}

// Apply replicates cmd and applies it to the FSM. Only the leader accepts commands; others
// fail at once with ErrNotLeader. timeout bounds the whole wait, not only the enqueue: once it
// passed, Error returns ErrEnqueueTimeout if the command never reached the leader's queue (it
// was not applied) or ErrTimeout if it did (the outcome is unknown). Zero means no timeout;
// the future still resolves on leadership loss or shutdown. A command larger than
// Config.MaxEntryBytes fails at once with ErrEntryTooLarge.
func (r *Raft) Apply(cmd []byte, timeout time.Duration) ApplyFuture {
	return r.ApplyLog(Log{Data: cmd}, timeout)
}

// ApplyLog is Apply for a log carrying Extensions too. Only Data and Extensions are used.
func (r *Raft) ApplyLog(log Log, timeout time.Duration) ApplyFuture {
	f := r.newLogFuture(Log{Type: LogCommand, Data: log.Data, Extensions: log.Extensions}, timeout, nil)
	return r.enqueue(f)
}

// ApplyContext is Apply bounded by ctx instead of a timeout. When ctx ends first, Error
// returns an error matching both ctx.Err() and ErrEnqueueTimeout or ErrTimeout, as for Apply.
func (r *Raft) ApplyContext(ctx context.Context, cmd []byte) ApplyFuture {
	f := r.newLogFuture(Log{Type: LogCommand, Data: cmd}, 0, ctx)
	return r.enqueue(f)
}

// Barrier returns a future that resolves once every entry before it was applied to the FSM
// of this (leader) node. It is used to make sure the FSM is current, for example after a
// leader change.
func (r *Raft) Barrier(timeout time.Duration) Future {
	f := r.newLogFuture(Log{Type: LogBarrier}, timeout, nil)
	return r.enqueue(f)
}

// BarrierContext is Barrier bounded by ctx instead of a timeout. When ctx ends first, Error
// returns an error matching ctx.Err() and ErrEnqueueTimeout (the barrier never reached the
// leader's queue) or ErrTimeout (it was queued and may still commit).
func (r *Raft) BarrierContext(ctx context.Context) Future {
	f := r.newLogFuture(Log{Type: LogBarrier}, 0, ctx)
	return r.enqueue(f)
}

// enqueue hands a log future to the main loop, within the future's deadline.
func (r *Raft) enqueue(f *logFuture) ApplyFuture {
	if n := len(f.log.Data) + len(f.log.Extensions); n > r.conf.MaxEntryBytes {
		return errorFuture{fmt.Errorf("%w: %d bytes, at most %d (Config.MaxEntryBytes)", ErrEntryTooLarge, n, r.conf.MaxEntryBytes)}
	}
	if r.getState() != Leader {
		if r.getState() == Shutdown {
			return errorFuture{ErrRaftShutdown}
		}
		return errorFuture{r.notLeaderErr()}
	}
	if err := handOff(r.applyCh, f, f.deadline, f.ctx, r.shutdownCh); err != nil {
		return errorFuture{err}
	}
	return f
}

// VerifyLeader confirms that this node is still the leader: the future resolves once a
// quorum of voters acknowledged a heartbeat sent after the call. For linearizable reads use
// ReadIndex, which also makes sure the commit index is current and the FSM caught up with it.
func (r *Raft) VerifyLeader() Future { return r.verifyLeader(context.Background()) }

// VerifyLeaderContext is VerifyLeader bounded by ctx. When ctx ends first, Error returns an
// error matching ctx.Err() and ErrEnqueueTimeout or ErrTimeout; a verification changes
// nothing either way.
func (r *Raft) VerifyLeaderContext(ctx context.Context) Future { return r.verifyLeader(ctx) }

func (r *Raft) verifyLeader(ctx context.Context) Future {
	v := newVerifyFuture(r.shutdownCh, ctx)
	if err := r.sendLeaderRequest(v, time.Time{}, ctx); err != nil {
		return errorFuture{err}
	}
	return v
}

// State returns the node's current role.
func (r *Raft) State() RaftState { return r.getState() }

// Leader returns the address of the current leader, or "" if none is known.
func (r *Raft) Leader() ServerAddress { return r.leader.Load().addr }

// LeaderWithID returns the address and ID of the current leader, or empty values.
func (r *Raft) LeaderWithID() (ServerAddress, ServerID) {
	l := r.leader.Load()
	return l.addr, l.id
}

// LeaderCh delivers true when this node becomes leader and false when it loses leadership.
// A slow reader sees only the newest value.
func (r *Raft) LeaderCh() <-chan bool { return r.leaderCh }

// LastIndex returns the index of the last entry in the log (or snapshot).
func (r *Raft) LastIndex() uint64 {
	i, _ := r.lastLogIndexTerm()
	return i
}

// AppliedIndex returns the index of the last entry applied to the FSM.
func (r *Raft) AppliedIndex() uint64 {
	i, _ := r.appliedIndexTerm()
	return i
}

// CommitIndex returns the highest index known to be committed.
func (r *Raft) CommitIndex() uint64 { return r.commitIndex.Load() }

// CurrentTerm returns the current term.
func (r *Raft) CurrentTerm() uint64 { return r.currentTerm.Load() }

// GetConfiguration returns the latest configuration, appended but not necessarily committed.
// It never waits on the main loop.
func (r *Raft) GetConfiguration() ConfigurationFuture {
	c := r.configs.Load()
	return configurationFuture{configuration: c.latest, index: c.latestIndex}
}

// Stats returns the node's status for humans and dashboards. It never waits on the main loop
// or the disk. Where hashicorp/raft reports the same fact, the key, and the format of its
// value, are the same, so dashboards carry over; docs/operating.md lists every key.
func (r *Raft) Stats() map[string]string {
	lastIndex, lastTerm := r.lastLogIndexTerm()
	appliedIndex, _ := r.appliedIndexTerm()
	snapIndex, snapTerm := r.snapshotIndexTerm()
	leader := r.leader.Load()
	c := r.configs.Load()
	state := r.getState()
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	return map[string]string{
		"state":                      statsStateName(state),
		"term":                       u(r.currentTerm.Load()),
		"last_log_index":             u(lastIndex),
		"last_log_term":              u(lastTerm),
		"commit_index":               u(r.commitIndex.Load()),
		"applied_index":              u(appliedIndex),
		"fsm_pending":                strconv.Itoa(r.fsmq.len()),
		"last_snapshot_index":        u(snapIndex),
		"last_snapshot_term":         u(snapTerm),
		"leader_id":                  string(leader.id),
		"leader_addr":                string(leader.addr),
		"latest_configuration":       fmt.Sprintf("%+v", c.latest.Servers),
		"latest_configuration_index": u(c.latestIndex),
		"num_peers":                  strconv.Itoa(otherVoters(c.latest, r.localID)),
		"protocol_version":           strconv.Itoa(r.protocolVersion),
		"protocol_version_min":       strconv.Itoa(r.protocolMin),
		"protocol_version_max":       strconv.Itoa(r.protocolMax),
		"snapshot_version_min":       "1",
		"snapshot_version_max":       strconv.Itoa(SnapshotVersion),
		"election_rounds":            u(r.rounds.Load()),
		"last_contact":               r.statsLastContact(state),
		"catching_up":                r.statsCatchingUp(),
	}
}

// statsStateName spells a role the way hashicorp/raft's stats do ("Leader"), unlike
// RaftState.String, which logs and metric labels use ("leader").
func statsStateName(s RaftState) string {
	switch s {
	case Follower:
		return "Follower"
	case Candidate:
		return "Candidate"
	case Leader:
		return "Leader"
	case Shutdown:
		return "Shutdown"
	}
	return s.String()
}

// otherVoters counts the voters of c besides id, or 0 when id is no voter of c: the peers
// whose votes this node needs.
func otherVoters(c Configuration, id ServerID) int {
	n, member := 0, false
	for _, s := range c.Servers {
		switch {
		case s.Suffrage != Voter:
		case s.ID == id:
			member = true
		default:
			n++
		}
	}
	if !member {
		return 0
	}
	return n
}

// statsLastContact is how long ago this node last heard from a leader (or granted a vote, or
// started), as a Go duration; "0" on the leader itself.
func (r *Raft) statsLastContact(state RaftState) string {
	if state == Leader {
		return "0"
	}
	return r.sinceContact().String()
}

// Shutdown stops the node: every goroutine exits, pending and later calls fail with
// ErrRaftShutdown, and the transport is closed. The returned future resolves once all
// goroutines exited. Calling it again is harmless.
func (r *Raft) Shutdown() Future {
	r.shutdownOnce.Do(func() {
		r.logger.Info("shutting down")
		r.closeShutdown()
	})
	// Closing the transport makes in-flight RPCs of the node's goroutines return promptly.
	if err := r.trans.Close(); err != nil {
		r.logger.Warn("closing transport", "error", err)
	}
	return shutdownFuture{r}
}

// closeShutdown signals the stop to every goroutine; once, under shutdownOnce.
func (r *Raft) closeShutdown() {
	close(r.shutdownCh)
	r.cancelCtx()
}

// stopping reports whether the node is shutting down or stopped.
func (r *Raft) stopping() bool {
	select {
	case <-r.shutdownCh:
		return true
	default:
		return false
	}
}

// Stopped returns a channel that is closed when the node stops: after Shutdown, or on its
// own after a local failure it cannot continue from (then ShutdownCause says which).
func (r *Raft) Stopped() <-chan struct{} { return r.shutdownCh }

// ShutdownCause returns the local failure that stopped the node, or nil after a requested
// Shutdown or while it runs.
func (r *Raft) ShutdownCause() error {
	if p := r.shutdownCause.Load(); p != nil {
		return *p
	}
	return nil
}
