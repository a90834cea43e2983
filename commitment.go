package raft

import (
	"slices"
	"sync"
)

// commitment tracks the voters' match indexes during one leader term and computes the commit
// index. Replication goroutines report progress through match; the main loop reads the result
// when notified on commitCh.
//
// It only ever commits an index at or past startIndex, the leader's first entry of its term:
// an entry of an earlier term is never committed by counting replicas, only by an entry of
// the current term committing after it (Raft paper, section 5.4.2 and Figure 8).
type commitment struct {
	mu           sync.Mutex
	matchIndexes map[ServerID]uint64 // voters only; guarded by mu
	commitIndex  uint64              // guarded by mu
	startIndex   uint64              // first index of the leader's term; immutable

	// commitCh is poked (coalescing, buffer 1) whenever commitIndex moves, so the main loop
	// wakes once however many updates landed meanwhile.
	commitCh chan struct{}
}

func newCommitment(commitCh chan struct{}, voters []ServerID, startIndex uint64) *commitment {
	c := &commitment{
		matchIndexes: make(map[ServerID]uint64, len(voters)),
		startIndex:   startIndex,
		commitCh:     commitCh,
	}
	for _, id := range voters {
		c.matchIndexes[id] = 0
	}
	return c
}

// setVoters replaces the voter set after a configuration change, keeping known progress.
func (c *commitment) setVoters(voters []ServerID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.matchIndexes
	c.matchIndexes = make(map[ServerID]uint64, len(voters))
	for _, id := range voters {
		c.matchIndexes[id] = old[id]
	}
	c.recalculate()
}

// match records that server id stores every entry up to matchIndex. Reports from
// non-voters and stale (smaller) reports are ignored.
func (c *commitment) match(id ServerID, matchIndex uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, ok := c.matchIndexes[id]
	if !ok || matchIndex <= prev {
		return
	}
	c.matchIndexes[id] = matchIndex
	c.recalculate()
}

// forget drops what server id acknowledged: it lost entries it had stored (a wiped or
// rolled-back disk), so its old acknowledgements must not count toward a later commit. The
// commit index never moves back.
func (c *commitment) forget(id ServerID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.matchIndexes[id]; ok {
		c.matchIndexes[id] = 0
	}
}

// getCommitIndex returns the current commit index.
func (c *commitment) getCommitIndex() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commitIndex
}

// recalculate runs with mu held.
func (c *commitment) recalculate() {
	if len(c.matchIndexes) == 0 {
		return
	}
	matches := make([]uint64, 0, len(c.matchIndexes))
	for _, m := range c.matchIndexes {
		matches = append(matches, m)
	}
	q := quorumMatchIndex(matches)
	if q > c.commitIndex && q >= c.startIndex {
		c.commitIndex = q
		select {
		case c.commitCh <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// quorumMatchIndex returns the largest index that a majority of the given match indexes have
// reached: sorted ascending, the element at (n-1)/2 is held by at least n/2+1 voters. The
// slice is sorted in place.
func quorumMatchIndex(matches []uint64) uint64 {
	if len(matches) == 0 {
		return 0
	}
	slices.Sort(matches)
	return matches[(len(matches)-1)/2]
}
