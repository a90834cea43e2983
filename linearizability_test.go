package raft_test

import (
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// kvClient runs puts and linearizable reads (ReadIndex on the leader, then its FSM) on a few
// keys, recording every operation in h, until stop closes.
func kvClient(c *raftest.Cluster, id int, seed int64, h *raftest.History, stop <-chan struct{}) {
	rng := rand.New(rand.NewSource(seed))
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(2+rng.Intn(6)) * time.Millisecond):
		}
		leader := c.Leader()
		if leader < 0 {
			continue
		}
		node := c.Node(leader)
		r := node.Raft()
		if r == nil {
			continue
		}
		inc := node.Incarnation()
		key := fmt.Sprintf("k%d", rng.Intn(3))
		if rng.Intn(2) == 0 {
			// Values from a few bytes to 1 MiB (log-uniform, the big ones rare enough to
			// keep a run short): the name keeps every value unique.
			_, data := chaosCommand(rng, id, seq, rng.Intn(300) == 0)
			value := string(data)
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
			continue
		}
		op := h.Begin(id, raftest.KVInput{Key: key})
		fsm, ok := node.FSM().(*raftest.KVFSM)
		if !ok || r.ReadIndex(300*time.Millisecond).Error() != nil {
			op.Failed()
			continue
		}
		value := fsm.Get(key)
		if inc.Crashed() {
			op.Failed() // a crashed node answers nobody
			continue
		}
		op.Ok(raftest.KVOutput{Value: value})
	}
}

func TestLinearizability_KVUnderFaults(t *testing.T) {
	forEachSeed(t, func(t *testing.T, seed int64) {
		opts := raftest.Options{Nodes: 5, Seed: seed, NewFSM: func(raft.ServerID) raft.FSM { return raftest.NewKVFSM() }}
		raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
			h := &raftest.History{}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for i := 0; i < 6; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					kvClient(c, i, seed+int64(i), h, stop)
				}()
			}
			rng := rand.New(rand.NewSource(seed))
			c.WaitLeader(waitLong)
			for step := 0; step < *chaosSteps/2; step++ {
				t.Logf("step %d: %s", step, chaosStep(c, rng))
				raftest.Eventually(time.Duration(50+rng.Intn(200))*time.Millisecond, func() bool { return false })
			}
			c.Heal()
			c.Net.ClearFaults()
			clearSlowness(c)
			restartDown(c)
			c.WaitLeader(waitLong)
			raftest.Eventually(300*time.Millisecond, func() bool { return false })
			close(stop)
			wg.Wait()
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
