// Package memnet is an in-memory network for tests that injects faults: cut links, partitions,
// isolated nodes, and seeded random drops, duplicates and delays per link.
//
// A Network is a raft.InmemNetwork with an InmemPolicy of its own: its transports are
// raft.InmemTransports, created with NewTransport, and everything the root package documents
// for them (messages copied through msgpack, the network timeout, Stats) holds. Every random
// decision comes from one *rand.Rand seeded at creation and drawn under a mutex, so a run is
// reproducible from its seed as far as goroutine scheduling allows.
//
// A link is one direction between two addresses. A request travels on the link from its caller
// to its target, its response on the link back. A node's messages to itself are never faulted.
// Link faults (Cut, Disconnect, Partition, Isolate) add up until Heal; random faults (SetFaults,
// SetDefaultFaults) stay until ClearFaults.
//
// raftest.Cluster runs its nodes over a Network (Cluster.Net).
package memnet

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/raftkit/raft"
)

// LinkFaults are the random faults of one direction of a link. The zero value is a perfect
// link.
type LinkFaults struct {
	// DropRate is the probability in [0, 1] that a message is lost.
	DropRate float64
	// DuplicateRate is the probability in [0, 1] that a request is delivered twice; the
	// answer to the second copy is discarded. Snapshot installs are never duplicated.
	DuplicateRate float64
	// MinDelay and MaxDelay bound the uniformly drawn latency added to each message. A
	// message delayed past the network timeout is lost.
	MinDelay, MaxDelay time.Duration
}

// Network is a raft.InmemNetwork whose links can be cut and made lossy. All methods are safe
// for concurrent use.
type Network struct {
	*raft.InmemNetwork
	faults *faults
}

// New returns a network without transports or faults whose random faults all come from one
// *rand.Rand seeded with seed.
func New(seed int64) *Network {
	f := &faults{
		rng:      rand.New(rand.NewPCG(uint64(seed), 0)),
		cuts:     make(map[link]struct{}),
		isolated: make(map[raft.ServerAddress]struct{}),
		perLink:  make(map[link]LinkFaults),
	}
	n := &Network{InmemNetwork: raft.NewInmemNetwork(), faults: f}
	n.SetPolicy(f)
	return n
}

// Cut loses every message from -> to: requests from a caller at from, and responses from a
// node at from to its callers at to. The other direction is untouched.
func (n *Network) Cut(from, to raft.ServerAddress) {
	n.faults.update(func(f *faults) { f.cuts[link{from, to}] = struct{}{} })
}

// Disconnect cuts both directions between a and b.
func (n *Network) Disconnect(a, b raft.ServerAddress) {
	n.faults.update(func(f *faults) {
		f.cuts[link{a, b}] = struct{}{}
		f.cuts[link{b, a}] = struct{}{}
	})
}

// Partition splits the network into groups: only nodes in the same group talk, and nodes not
// listed in any group (including ones attached later) are isolated. It replaces an earlier
// partition; cuts and isolations stay. An address listed twice belongs to its last group.
func (n *Network) Partition(groups ...[]raft.ServerAddress) {
	m := make(map[raft.ServerAddress]int)
	for i, g := range groups {
		for _, addr := range g {
			m[addr] = i
		}
	}
	n.faults.update(func(f *faults) { f.groups = m })
}

// Isolate cuts every link to and from addr.
func (n *Network) Isolate(addr raft.ServerAddress) {
	n.faults.update(func(f *faults) { f.isolated[addr] = struct{}{} })
}

// Heal brings every link up again: it undoes Cut, Disconnect, Partition and Isolate. Random
// faults set with SetFaults and SetDefaultFaults stay.
func (n *Network) Heal() {
	n.faults.update(func(f *faults) {
		clear(f.cuts)
		clear(f.isolated)
		f.groups = nil
	})
}

// SetFaults sets the random faults of the link from -> to, replacing the default faults for
// it.
func (n *Network) SetFaults(from, to raft.ServerAddress, lf LinkFaults) {
	n.faults.update(func(f *faults) { f.perLink[link{from, to}] = lf })
}

// SetDefaultFaults sets the random faults of every link without its own SetFaults.
func (n *Network) SetDefaultFaults(lf LinkFaults) {
	n.faults.update(func(f *faults) { f.defaults = lf })
}

// ClearFaults removes all random faults, per link and default. Cuts and partitions stay.
func (n *Network) ClearFaults() {
	n.faults.update(func(f *faults) {
		clear(f.perLink)
		f.defaults = LinkFaults{}
	})
}

// link is one direction between two addresses.
type link struct{ from, to raft.ServerAddress }

// faults is the Network's raft.InmemPolicy.
type faults struct {
	mu       sync.Mutex
	rng      *rand.Rand
	cuts     map[link]struct{}
	isolated map[raft.ServerAddress]struct{}
	groups   map[raft.ServerAddress]int // nil when no partition is in force
	perLink  map[link]LinkFaults
	defaults LinkFaults
}

// update runs change under the lock.
func (f *faults) update(change func(*faults)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// Route implements raft.InmemPolicy. The draws happen in the order calls are made.
func (f *faults) Route(from, to raft.ServerAddress, canDuplicate bool) raft.InmemRoute {
	f.mu.Lock()
	defer f.mu.Unlock()
	req, resp := f.faultsLocked(from, to), f.faultsLocked(to, from)
	var r raft.InmemRoute
	r.RequestLost = f.chanceLocked(req.DropRate) || !f.linkUpLocked(from, to)
	r.RequestDelay = f.delayLocked(req)
	if canDuplicate && !r.RequestLost && f.chanceLocked(req.DuplicateRate) {
		r.Duplicate = true
		r.DuplicateDelay = f.delayLocked(req)
	}
	r.ResponseLost = f.chanceLocked(resp.DropRate)
	r.ResponseDelay = f.delayLocked(resp)
	return r
}

// LinkUp implements raft.InmemPolicy: it reports whether messages from -> to get through the
// cuts and partitions.
func (f *faults) LinkUp(from, to raft.ServerAddress) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.linkUpLocked(from, to)
}

func (f *faults) linkUpLocked(from, to raft.ServerAddress) bool {
	if from == to {
		return true
	}
	if _, cut := f.cuts[link{from, to}]; cut {
		return false
	}
	_, fromIsolated := f.isolated[from]
	_, toIsolated := f.isolated[to]
	if fromIsolated || toIsolated {
		return false
	}
	if f.groups == nil {
		return true
	}
	gf, okf := f.groups[from]
	gt, okt := f.groups[to]
	return okf && okt && gf == gt
}

func (f *faults) faultsLocked(from, to raft.ServerAddress) LinkFaults {
	if from == to {
		return LinkFaults{}
	}
	if lf, ok := f.perLink[link{from, to}]; ok {
		return lf
	}
	return f.defaults
}

// chanceLocked returns true with probability p. It draws from the rng only for 0 < p < 1, so
// links without random faults do not consume randomness.
func (f *faults) chanceLocked(p float64) bool {
	switch {
	case p <= 0:
		return false
	case p >= 1:
		return true
	default:
		return f.rng.Float64() < p
	}
}

// delayLocked draws a latency uniformly from [MinDelay, MaxDelay].
func (f *faults) delayLocked(lf LinkFaults) time.Duration {
	if lf.MaxDelay <= lf.MinDelay {
		return max(lf.MinDelay, 0)
	}
	return max(lf.MinDelay+time.Duration(f.rng.Int64N(int64(lf.MaxDelay-lf.MinDelay)+1)), 0)
}
