package raft

import (
	"context"
	"fmt"
	"time"
)

// Membership changes add or remove one server at a time (Ongaro's thesis, section 4.1): a
// configuration that differs from the previous one by a single voter always overlaps it in a
// majority, so no two leaders can be elected across the change. The leader applies one change
// at a time: the next waits until the previous configuration entry committed.

// changeKind says what a membership change does.
type changeKind uint8

const (
	changeAddVoter changeKind = iota + 1
	changeAddNonvoter
	changeDemoteVoter
	changeRemoveServer
)

func (k changeKind) String() string {
	switch k {
	case changeAddVoter:
		return "add voter"
	case changeAddNonvoter:
		return "add nonvoter"
	case changeDemoteVoter:
		return "demote voter"
	case changeRemoveServer:
		return "remove server"
	default:
		return "unknown change"
	}
}

// configChangeFuture is a membership change on its way through the leader. It resolves when
// the configuration entry that completes the change was committed and applied.
type configChangeFuture struct {
	logFuture
	kind      changeKind
	id        ServerID
	addr      ServerAddress
	prevIndex uint64
}

// promotion is an AddVoter whose server joined as a nonvoter and becomes a voter once its
// log caught up.
type promotion struct {
	future *configChangeFuture
}

// AddVoter adds a server as a voter, or makes an existing nonvoter one. A new server first
// joins as a nonvoter and is promoted only once its log is close to the leader's, so adding a
// node to a loaded cluster never costs availability. prevIndex, if not zero, must equal the
// index of the latest configuration (see GetConfiguration) or the change fails with
// ErrConfigurationChanged. The future resolves once the promotion committed; timeout bounds
// the whole wait, catching up included (zero: no limit).
func (r *Raft) AddVoter(id ServerID, addr ServerAddress, prevIndex uint64, timeout time.Duration) IndexFuture {
	return r.requestConfigChange(changeAddVoter, id, addr, prevIndex, timeout, nil)
}

// AddVoterContext is AddVoter bounded by ctx instead of a timeout. When ctx ends first, Error
// returns an error matching ctx.Err() and ErrEnqueueTimeout (the leader never took the change:
// nothing happened) or ErrTimeout (the change was queued or under way and may still take
// effect: check GetConfiguration). The same holds for every membership change's Context form.
func (r *Raft) AddVoterContext(ctx context.Context, id ServerID, addr ServerAddress, prevIndex uint64) IndexFuture {
	return r.requestConfigChange(changeAddVoter, id, addr, prevIndex, 0, ctx)
}

// AddNonvoter adds a server that receives the log but does not vote, or updates the address
// of an existing server without changing its suffrage.
func (r *Raft) AddNonvoter(id ServerID, addr ServerAddress, prevIndex uint64, timeout time.Duration) IndexFuture {
	return r.requestConfigChange(changeAddNonvoter, id, addr, prevIndex, timeout, nil)
}

// AddNonvoterContext is AddNonvoter bounded by ctx; see AddVoterContext.
func (r *Raft) AddNonvoterContext(ctx context.Context, id ServerID, addr ServerAddress, prevIndex uint64) IndexFuture {
	return r.requestConfigChange(changeAddNonvoter, id, addr, prevIndex, 0, ctx)
}

// DemoteVoter turns a voter into a nonvoter. It is a no-op for a server that is not a voter.
func (r *Raft) DemoteVoter(id ServerID, prevIndex uint64, timeout time.Duration) IndexFuture {
	return r.requestConfigChange(changeDemoteVoter, id, "", prevIndex, timeout, nil)
}

// DemoteVoterContext is DemoteVoter bounded by ctx; see AddVoterContext.
func (r *Raft) DemoteVoterContext(ctx context.Context, id ServerID, prevIndex uint64) IndexFuture {
	return r.requestConfigChange(changeDemoteVoter, id, "", prevIndex, 0, ctx)
}

// RemoveServer removes a server from the cluster. A leader that removes itself keeps leading
// until the change committed, then steps down.
func (r *Raft) RemoveServer(id ServerID, prevIndex uint64, timeout time.Duration) IndexFuture {
	return r.requestConfigChange(changeRemoveServer, id, "", prevIndex, timeout, nil)
}

// RemoveServerContext is RemoveServer bounded by ctx; see AddVoterContext.
func (r *Raft) RemoveServerContext(ctx context.Context, id ServerID, prevIndex uint64) IndexFuture {
	return r.requestConfigChange(changeRemoveServer, id, "", prevIndex, 0, ctx)
}

func (r *Raft) requestConfigChange(kind changeKind, id ServerID, addr ServerAddress, prevIndex uint64, timeout time.Duration, ctx context.Context) IndexFuture {
	if id == "" || (addr == "" && (kind == changeAddVoter || kind == changeAddNonvoter)) {
		return errorFuture{fmt.Errorf("%w: %s needs a server ID and address", ErrInvalidConfiguration, kind)}
	}
	f := &configChangeFuture{kind: kind, id: id, addr: addr, prevIndex: prevIndex}
	f.logFuture = *r.newLogFuture(Log{Type: LogConfiguration}, timeout, ctx)
	if err := r.sendLeaderRequest(f, f.deadline, f.ctx); err != nil {
		return errorFuture{err}
	}
	return f
}

// handleConfigChange queues a membership change on the leader.
func (r *Raft) handleConfigChange(f *configChangeFuture) {
	ls := r.leaderState
	if r.transfer != nil {
		f.respond(ErrLeadershipTransferInProgress)
		return
	}
	ls.configQueue = append(ls.configQueue, f)
	r.maybeStartConfigChange()
}

// maybeStartConfigChange starts the next membership change (or the pending promotion) once
// the previous configuration committed and no leadership transfer is running. It runs after
// every commit and on the leader's tick, so changes held back by a transfer go ahead once it
// ended.
func (r *Raft) maybeStartConfigChange() {
	ls := r.leaderState
	if ls == nil || r.configurations.latestIndex != r.configurations.committedIndex {
		return // the latest configuration is not committed yet
	}
	if r.restoring != nil {
		return // a Restore appends nothing until it is done; resumeAfterRestore calls back
	}
	if r.transfer != nil {
		// A transferring leader appends nothing (Ongaro's thesis, section 3.10): the target
		// must be able to catch up with a log that stops growing, and a configuration
		// entry could even remove the target from the voters.
		return
	}
	if r.commitIndex.Load() < ls.commitment.startIndex {
		// No entry of this term committed yet, so a configuration entry of an earlier
		// leader that this node never saw may still commit: appending ours now could
		// yield two configurations with disjoint majorities (the single-server change
		// bug, Ongaro, raft-dev 2015). The term's no-op commit calls back here.
		return
	}
	if ls.promotion != nil {
		r.maybePromote()
		return
	}
	for len(ls.configQueue) > 0 {
		f := ls.configQueue[0]
		ls.configQueue = ls.configQueue[1:]
		if isDone(&f.deferError) {
			continue // its caller gave up waiting
		}
		if f.prevIndex != 0 && f.prevIndex != r.configurations.latestIndex {
			f.respond(fmt.Errorf("%w: prevIndex %d, latest configuration is at %d", ErrConfigurationChanged, f.prevIndex, r.configurations.latestIndex))
			continue
		}
		next, promote, err := nextConfiguration(r.configurations.latest, f)
		if err != nil {
			f.respond(err)
			continue
		}
		if promote {
			ls.promotion = &promotion{future: f}
			if sameConfiguration(next, r.configurations.latest) {
				r.maybePromote() // already a nonvoter: only the promotion is left
				return
			}
			r.dispatchConfiguration(r.newLogFuture(Log{Type: LogConfiguration}, 0, nil), next)
			return
		}
		if sameConfiguration(next, r.configurations.latest) {
			f.log.Index = r.configurations.latestIndex
			f.respond(nil)
			continue
		}
		r.dispatchConfiguration(&f.logFuture, next)
		return
	}
}

// maybePromote makes the server of the pending AddVoter a voter once its log is within one
// batch of the leader's.
func (r *Raft) maybePromote() {
	ls := r.leaderState
	p := ls.promotion
	if isDone(&p.future.deferError) {
		r.logger.Warn("abandoning promotion: the caller stopped waiting", "peer", string(p.future.id))
		ls.promotion = nil
		r.maybeStartConfigChange()
		return
	}
	repl, ok := ls.replicators[p.future.id]
	if !ok {
		return
	}
	lastIndex, _ := r.lastLogIndexTerm()
	if repl.matchIndex.Load()+uint64(r.conf.MaxAppendEntries) < lastIndex {
		return
	}
	next := r.configurations.latest.Clone()
	for i := range next.Servers {
		if next.Servers[i].ID == p.future.id {
			next.Servers[i].Suffrage = Voter
		}
	}
	ls.promotion = nil
	r.logger.Info("promoting caught-up server to voter", "peer", string(p.future.id))
	r.dispatchConfiguration(&p.future.logFuture, next)
}

// dispatchConfiguration appends a configuration entry; it takes effect at once.
func (r *Raft) dispatchConfiguration(f *logFuture, c Configuration) {
	f.log = Log{Type: LogConfiguration, Data: encodeConfiguration(c)}
	r.dispatchLogs([]*logFuture{f})
	r.setConfigurations(r.configurations.withLatest(c, f.log.Index))
	r.startStopReplication()
	r.logger.Info("configuration changed", "index", f.log.Index, "servers", fmt.Sprintf("%+v", c.Servers))
}

// nextConfiguration computes the configuration a change leads to. promote reports an
// AddVoter that must first catch up as a nonvoter (next then holds it as a nonvoter).
func nextConfiguration(cur Configuration, f *configChangeFuture) (next Configuration, promote bool, err error) {
	next = cur.Clone()
	idx := -1
	for i, s := range next.Servers {
		if s.ID == f.id {
			idx = i
		}
	}
	switch f.kind {
	case changeAddVoter:
		if idx >= 0 && next.Servers[idx].Suffrage == Voter {
			next.Servers[idx].Address = f.addr
			break
		}
		if idx >= 0 {
			next.Servers[idx].Address = f.addr
		} else {
			next.Servers = append(next.Servers, Server{Suffrage: Nonvoter, ID: f.id, Address: f.addr})
		}
		promote = true
	case changeAddNonvoter:
		if idx >= 0 {
			next.Servers[idx].Address = f.addr
		} else {
			next.Servers = append(next.Servers, Server{Suffrage: Nonvoter, ID: f.id, Address: f.addr})
		}
	case changeDemoteVoter:
		if idx >= 0 {
			next.Servers[idx].Suffrage = Nonvoter
		}
	case changeRemoveServer:
		if idx >= 0 {
			next.Servers = append(next.Servers[:idx], next.Servers[idx+1:]...)
		}
	}
	if err := next.Validate(); err != nil {
		return Configuration{}, false, fmt.Errorf("%s %s: %w", f.kind, f.id, err)
	}
	return next, promote, nil
}

func sameConfiguration(a, b Configuration) bool {
	if len(a.Servers) != len(b.Servers) {
		return false
	}
	for i := range a.Servers {
		if a.Servers[i] != b.Servers[i] {
			return false
		}
	}
	return true
}

// isDone reports whether a future already resolved (for example, its caller timed out).
func isDone(d *deferError) bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}
