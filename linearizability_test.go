package raft_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// One harness for every linearizability test: clients put through the leader and read in a
// readMode on a few keys while a script injects faults; the recorded history is then checked.

// readMode is how the clients of a linearizability run read.
type readMode string

const (
	// readLeader: ReadIndex on the leader, then its FSM. Puts carry values of a few bytes to
	// 1 MiB.
	readLeader readMode = "leader"
	// readFollower: ReadIndexContext on a random node (mostly followers), then its FSM.
	readFollower readMode = "follower"
	// readLease: like readFollower with leases on (the leader answers from its lease).
	readLease readMode = "lease"
	// readBroken reads a random node's FSM without asking anyone: deliberately wrong, to
	// show the check catches stale reads.
	readBroken readMode = "broken"
)

// kvClient runs puts through the leader and reads in mode on a few keys, recording every
// operation in h, until stop closes.
func kvClient(c *raftest.Cluster, mode readMode, id int, seed int64, h *raftest.History, stop <-chan struct{}) {
	rng := rand.New(rand.NewSource(seed))
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(2+rng.Intn(6)) * time.Millisecond):
		}
		key := fmt.Sprintf("k%d", rng.Intn(3))
		if rng.Intn(2) == 0 {
			value := fmt.Sprintf("c%d-%d", id, seq)
			if mode == readLeader {
				// Log-uniform sizes, the big ones rare enough to keep a run short: the name
				// keeps every value unique.
				_, data := chaosCommand(rng, id, seq, rng.Intn(300) == 0)
				value = string(data)
			}
			kvPut(c, h, id, key, value)
			continue
		}
		kvRead(c, mode, rng, h, id, key)
	}
}

// kvPut puts key=value through the current leader, if there is one, and records the outcome.
func kvPut(c *raftest.Cluster, h *raftest.History, id int, key, value string) {
	leader := c.Leader()
	if leader < 0 {
		return
	}
	r, inc := c.Node(leader).Raft(), c.Node(leader).Incarnation()
	if r == nil {
		return
	}
	op := h.Begin(id, raftest.KVInput{Put: true, Key: key, Value: value})
	err := r.Apply(raftest.KVPutCommand(key, value), 300*time.Millisecond).Error()
	switch {
	case err == nil && inc.Crashed():
		op.Unknown() // a crashed node answers nobody
	case err == nil:
		op.Ok(raftest.KVOutput{})
	case errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout):
		op.Failed()
	default:
		op.Unknown()
	}
}

// kvRead reads key in mode and records the outcome.
func kvRead(c *raftest.Cluster, mode readMode, rng *rand.Rand, h *raftest.History, id int, key string) {
	var node *raftest.Node
	if mode == readLeader {
		leader := c.Leader()
		if leader < 0 {
			return
		}
		node = c.Node(leader)
	} else {
		node = c.Node(rng.Intn(len(c.Nodes())))
	}
	r, inc := node.Raft(), node.Incarnation()
	if r == nil {
		return
	}
	fsm, ok := node.FSM().(*raftest.KVFSM)
	if !ok {
		return
	}
	op := h.Begin(id, raftest.KVInput{Key: key})
	if mode != readBroken {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := r.ReadIndexContext(ctx, raft.WithLease(mode == readLease)).Error()
		cancel()
		if err != nil {
			op.Failed() // a read that did not happen has no effect
			return
		}
	}
	value := fsm.Get(key)
	if inc.Crashed() {
		op.Failed() // a crashed node answers nobody
		return
	}
	op.Ok(raftest.KVOutput{Value: value})
}

// runHistory runs 6 clients in mode while script injects faults, then heals the cluster,
// and returns the recorded history.
func runHistory(t *testing.T, c *raftest.Cluster, mode readMode, seed int64, script func()) *raftest.History {
	h := &raftest.History{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	c.WaitLeader(waitLong)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kvClient(c, mode, i, seed+int64(i), h, stop)
		}()
	}
	script()
	c.Heal()
	c.Net.ClearFaults()
	c.WaitLeader(waitLong)
	raftest.Eventually(300*time.Millisecond, func() bool { return false })
	close(stop)
	wg.Wait()
	return h
}

// chaosScript injects the randomized faults of the chaos tests (partitions, abrupt crashes
// at once or inside chosen operations, restarts, drops, duplicates and delays, slow disks and
// FSMs) for steps steps, logging each, then restarts every crashed node.
func chaosScript(t *testing.T, c *raftest.Cluster, rng *rand.Rand, steps int) func() {
	return func() {
		for step := 0; step < steps; step++ {
			t.Logf("step %d: %s", step, chaosStep(c, rng))
			raftest.Eventually(time.Duration(50+rng.Intn(200))*time.Millisecond, func() bool { return false })
		}
		c.Heal()
		clearSlowness(c)
		restartDown(c)
	}
}

// checkHistory fails the test unless h is linearizable and long enough to mean something.
func checkHistory(t *testing.T, h *raftest.History) {
	t.Helper()
	ok, err := h.Check(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Logf("linearizability search timed out on %d operations; inconclusive", h.Len())
	}
	t.Logf("%d operations checked", h.Len())
	if h.Len() < 50 {
		t.Fatalf("only %d operations recorded: the check proves little", h.Len())
	}
}

// Puts and leader reads stay linearizable under partitions, abrupt crashes, drops,
// duplicates, delays and slow disks and FSMs.
func TestLinearizability_KVUnderFaults(t *testing.T) {
	linearizableUnderFaults(t, readLeader)
}

// Follower ReadIndex and lease reads stay linearizable under the same faults.
func TestLinearizability_FollowerAndLeaseReadsUnderFaults(t *testing.T) {
	for _, mode := range []readMode{readFollower, readLease} {
		t.Run(string(mode), func(t *testing.T) { linearizableUnderFaults(t, mode) })
	}
}

// linearizableUnderFaults checks, for each seed, that clients reading in mode on a five-node
// cluster under the chaos tests' faults record a linearizable history.
func linearizableUnderFaults(t *testing.T, mode readMode) {
	forEachSeed(t, func(t *testing.T, seed int64) {
		opts := raftest.Options{Nodes: 5, Seed: seed,
			NewFSM: func(raft.ServerID) raft.FSM { return raftest.NewKVFSM() },
			Config: func(conf *raft.Config) { conf.LeaseReads = mode == readLease },
		}
		raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
			rng := rand.New(rand.NewSource(seed))
			h := runHistory(t, c, mode, seed, chaosScript(t, c, rng, *chaosSteps/2))
			checkHistory(t, h)
		})
	})
}

// The same clients and the same check, with reads that skip ReadIndex, must fail: a node cut
// off from the majority keeps serving its stale FSM while the majority acknowledges writes.
// This shows the check above can see the bug it exists for.
func TestLinearizability_BrokenFollowerReadsFailTheCheck(t *testing.T) {
	forEachSeed(t, func(t *testing.T, seed int64) {
		opts := raftest.Options{Nodes: 5, Seed: seed, NewFSM: func(raft.ServerID) raft.FSM { return raftest.NewKVFSM() }}
		raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
			script := func() {
				// A follower is cut off for a while, then the cluster runs healed.
				leader := c.WaitLeader(waitLong)
				c.Isolate((leader + 1) % len(c.Nodes()))
				raftest.Eventually(500*time.Millisecond, func() bool { return false })
			}
			h := runHistory(t, c, readBroken, seed, script)
			ok, err := h.Check(time.Minute)
			if ok || err == nil {
				t.Fatalf("reads without ReadIndex passed the linearizability check (%d operations): the check cannot see stale reads", h.Len())
			}
			t.Logf("rejected as expected over %d operations: %v", h.Len(), err)
		})
	})
}

// The checker must reject a history that is not linearizable: a read that returns a value
// overwritten before the read began.
func TestLinearizability_CheckerRejectsStaleRead(t *testing.T) {
	h := &raftest.History{}
	h.Begin(0, raftest.KVInput{Put: true, Key: "x", Value: "1"}).Ok(raftest.KVOutput{})
	h.Begin(0, raftest.KVInput{Put: true, Key: "x", Value: "2"}).Ok(raftest.KVOutput{})
	h.Begin(1, raftest.KVInput{Key: "x"}).Ok(raftest.KVOutput{Value: "1"})
	if ok, err := h.Check(10 * time.Second); ok || err == nil {
		t.Fatalf("stale read accepted: ok=%v err=%v", ok, err)
	}
	// An unknown-outcome put may take effect late: reading its value after a later put is
	// then fine.
	g := &raftest.History{}
	g.Begin(0, raftest.KVInput{Put: true, Key: "x", Value: "1"}).Unknown()
	g.Begin(1, raftest.KVInput{Put: true, Key: "x", Value: "2"}).Ok(raftest.KVOutput{})
	g.Begin(1, raftest.KVInput{Key: "x"}).Ok(raftest.KVOutput{Value: "1"})
	if ok, err := g.Check(10 * time.Second); !ok || err != nil {
		t.Fatalf("legal history rejected: ok=%v err=%v", ok, err)
	}
}
