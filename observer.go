package raft

import (
	"sync"
	"sync/atomic"
)

// Observation is an event delivered to observers. Data is one of RaftState,
// LeaderObservation, PeerObservation, FailedHeartbeatObservation or
// ResumedHeartbeatObservation.
type Observation struct {
	Raft *Raft
	Data any
}

// LeaderObservation reports a change of the known leader (empty when none is known).
type LeaderObservation struct {
	LeaderID   ServerID
	LeaderAddr ServerAddress
	Term       uint64
}

// PeerObservation reports that the leader started or stopped replicating to a server.
type PeerObservation struct {
	Removed bool
	Peer    Server
}

// FailedHeartbeatObservation reports a peer the leader could not reach for a heartbeat after
// it had been reachable.
type FailedHeartbeatObservation struct {
	PeerID ServerID
}

// ResumedHeartbeatObservation reports a peer that answers heartbeats again.
type ResumedHeartbeatObservation struct {
	PeerID ServerID
}

// FilterFn decides whether an observer wants an observation.
type FilterFn func(o *Observation) bool

// Observer receives observations on its channel. Deliveries never block the node unless the
// observer was created blocking; a non-blocking observer drops what its channel has no room for
// and counts it.
type Observer struct {
	ch       chan Observation
	blocking bool
	filter   FilterFn

	observed atomic.Uint64
	dropped  atomic.Uint64
}

// NewObserver creates an observer delivering to ch. With blocking set, a full channel stalls the
// goroutine that produced the event (for state and leader changes, the main loop) until the
// observer reads or the node shuts down: use it only with a reader that keeps up. filter may be
// nil to receive everything.
func NewObserver(ch chan Observation, blocking bool, filter FilterFn) *Observer {
	return &Observer{ch: ch, blocking: blocking, filter: filter}
}

// GetNumObserved returns how many observations were delivered. The Get prefix is
// hashicorp/raft's name for the same method, kept so code moving from it compiles unchanged.
func (o *Observer) GetNumObserved() uint64 { return o.observed.Load() }

// GetNumDropped returns how many observations were dropped for lack of room (named like
// GetNumObserved, after hashicorp/raft).
func (o *Observer) GetNumDropped() uint64 { return o.dropped.Load() }

// observers is the node's registry.
type observers struct {
	mu   sync.RWMutex
	list map[*Observer]struct{} // guarded by mu
}

// RegisterObserver starts delivering observations to o.
func (r *Raft) RegisterObserver(o *Observer) {
	r.obs.mu.Lock()
	defer r.obs.mu.Unlock()
	if r.obs.list == nil {
		r.obs.list = make(map[*Observer]struct{})
	}
	r.obs.list[o] = struct{}{}
}

// DeregisterObserver stops delivering observations to o.
func (r *Raft) DeregisterObserver(o *Observer) {
	r.obs.mu.Lock()
	defer r.obs.mu.Unlock()
	delete(r.obs.list, o)
}

// observe delivers data to every interested observer. The registry lock is not held while
// sending.
func (r *Raft) observe(data any) {
	r.obs.mu.RLock()
	list := make([]*Observer, 0, len(r.obs.list))
	for o := range r.obs.list {
		list = append(list, o)
	}
	r.obs.mu.RUnlock()
	ob := Observation{Raft: r, Data: data}
	for _, o := range list {
		if o.filter != nil && !o.filter(&ob) {
			continue
		}
		if o.blocking {
			select {
			case o.ch <- ob:
				o.observed.Add(1)
			case <-r.shutdownCh:
				return
			}
			continue
		}
		select {
		case o.ch <- ob:
			o.observed.Add(1)
		default:
			o.dropped.Add(1)
		}
	}
}
