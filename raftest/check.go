package raftest

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/raftkit/raft"
)

// checker collects the safety observations of a run. It is safe for concurrent use.
type checker struct {
	mu         sync.Mutex
	leaders    map[uint64]raft.ServerID // term -> the leader seen in it
	applied    map[uint64]appliedEntry  // index -> what the first node applied there
	violations []string
}

type appliedEntry struct {
	term uint64
	hash uint64
	node raft.ServerID
}

func newChecker() *checker {
	return &checker{leaders: make(map[uint64]raft.ServerID), applied: make(map[uint64]appliedEntry)}
}

func (c *checker) violate(format string, args ...any) {
	if len(c.violations) < 20 {
		c.violations = append(c.violations, fmt.Sprintf(format, args...))
	}
}

// observeLeader records that id led term; a second leader in one term is a violation.
func (c *checker) observeLeader(term uint64, id raft.ServerID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.leaders[term]; ok && prev != id {
		c.violate("two leaders in term %d: %s and %s", term, prev, id)
		return
	}
	c.leaders[term] = id
}

// recordApply records that node applied the entry; a different entry at the same index on
// any node (or incarnation) is a violation of state machine safety.
func (c *checker) recordApply(node raft.ServerID, l *raft.Log) {
	h := fnv.New64a()
	h.Write(l.Data)
	e := appliedEntry{term: l.Term, hash: h.Sum64(), node: node}
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, ok := c.applied[l.Index]
	if !ok {
		c.applied[l.Index] = e
		return
	}
	if prev.term != e.term || prev.hash != e.hash {
		c.violate("index %d applied differently: %s applied term %d, %s applied term %d (data differs: %v)",
			l.Index, prev.node, prev.term, node, e.term, prev.hash != e.hash)
	}
}

func (c *checker) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) == 0 {
		return nil
	}
	return errors.New("safety violated:\n  " + strings.Join(c.violations, "\n  "))
}

// LeaderTerms returns how many distinct terms had an observed leader.
func (c *Cluster) LeaderTerms() int {
	c.checker.mu.Lock()
	defer c.checker.mu.Unlock()
	return len(c.checker.leaders)
}

// checkLogMatching checks the Log Matching property over every pair of running nodes: where
// two logs hold an entry with the same index and term, they hold identical entries at every
// index up to it. Run it when the cluster is quiet (logs may change under a live check).
func (c *Cluster) checkLogMatching() error {
	var stores []*Node
	for _, n := range c.nodes {
		if n.Raft() != nil {
			stores = append(stores, n)
		}
	}
	for i := 0; i < len(stores); i++ {
		for j := i + 1; j < len(stores); j++ {
			if err := logsMatch(stores[i], stores[j]); err != nil {
				return err
			}
		}
	}
	return nil
}

func logsMatch(a, b *Node) error {
	aFirst, _ := a.Logs.FirstIndex()
	aLast, _ := a.Logs.LastIndex()
	bFirst, _ := b.Logs.FirstIndex()
	bLast, _ := b.Logs.LastIndex()
	lo, hi := max(aFirst, bFirst), min(aLast, bLast)
	if aFirst == 0 || bFirst == 0 || lo > hi {
		return nil
	}
	mustMatch := false
	for i := hi; i >= lo; i-- {
		var la, lb raft.Log
		if a.Logs.GetLog(i, &la) != nil || b.Logs.GetLog(i, &lb) != nil {
			continue
		}
		same := la.Term == lb.Term && la.Type == lb.Type && bytes.Equal(la.Data, lb.Data)
		if la.Term == lb.Term && !same {
			return fmt.Errorf("log matching violated at index %d term %d between %s and %s: different entries", i, la.Term, a.ID, b.ID)
		}
		if mustMatch && !same {
			return fmt.Errorf("log matching violated: %s and %s agree at a later index but differ at %d", a.ID, b.ID, i)
		}
		if same {
			mustMatch = true
		}
		if i == 0 {
			break
		}
	}
	return nil
}

// Commands returns the commands node i's RecordingFSM applied, as strings, in order (after a
// snapshot restore, the restored ones first). It fails the test if the node's FSM is not a
// RecordingFSM (or a type that embeds one).
func (c *Cluster) Commands(i int) []string {
	c.t.Helper()
	fsm, ok := c.nodes[i].FSM().(interface{ Entries() []Entry })
	if !ok {
		c.t.Fatalf("raftest: node %d's FSM is a %T, not a *RecordingFSM", i, c.nodes[i].FSM())
	}
	var out []string
	for _, e := range fsm.Entries() {
		out = append(out, string(e.Data))
	}
	return out
}

// WaitSameCommands waits until every running node applied index, checks that the
// RecordingFSMs of all running nodes hold the same commands in the same order, and returns
// them. It fails the test otherwise.
func (c *Cluster) WaitSameCommands(index uint64, timeout time.Duration) []string {
	c.t.Helper()
	c.WaitApplied(index, timeout)
	var want []string
	first := -1
	for i, n := range c.nodes {
		if n.Raft() == nil {
			continue
		}
		got := c.Commands(i)
		if first < 0 {
			want, first = got, i
			continue
		}
		if !slices.Equal(got, want) {
			c.t.Fatalf("raftest: node %d applied %d commands, different from node %d's %d", i, len(got), first, len(want))
		}
	}
	return want
}
