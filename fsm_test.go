package raft_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// The FSM goroutine and its queue: a slow FSM never costs the leader its leadership
// (docs/design.md, sections 2 and 4).

// slowFSM is a RecordingFSM that takes perApply of (virtual) time for every entry.
type slowFSM struct {
	*raftest.RecordingFSM
	perApply time.Duration
}

func (f *slowFSM) Apply(l *raft.Log) any {
	time.Sleep(f.perApply) // models a slow state machine; virtual time inside the bubble
	return f.RecordingFSM.Apply(l)
}

// A slow FSM must slow clients down, never cost the cluster its leader. Open-loop load of
// 1,000 commands/s against FSMs that take 20ms per command: before the fix the followers'
// main loops blocked handing batches to their full FSM queues, stopped answering
// heartbeats, and the term climbed from election to election. With small batches the FSM
// queue's bound (64 batches) is below the load, so the main loop's hold-back and the
// leader's back-pressure (ErrEnqueueTimeout) are exercised too.
func TestFSMHandoff_SlowFSMNeverCostsTheLeader(t *testing.T) {
	for _, tc := range []struct {
		name           string
		maxAppend      int
		wantTurnedAway bool
	}{
		{"default batches", 64, false},
		{"small batches", 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testSlowFSMKeepsLeader(t, tc.maxAppend, tc.wantTurnedAway)
		})
	}
}

func testSlowFSMKeepsLeader(t *testing.T, maxAppend int, wantTurnedAway bool) {
	opts := raftest.Options{Nodes: 3, NewFSM: func(raft.ServerID) raft.FSM {
		return &slowFSM{RecordingFSM: raftest.NewRecordingFSM(), perApply: 20 * time.Millisecond}
	}, Config: func(c *raft.Config) { c.MaxAppendEntries = maxAppend }}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		term := r.CurrentTerm()
		var wg sync.WaitGroup
		var mu sync.Mutex
		outcomes := map[string]int{}
		tick := time.NewTicker(time.Millisecond)
		for i := 0; i < 2000; i++ {
			<-tick.C
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := r.Apply(fmt.Appendf(nil, "load-%d", i), 500*time.Millisecond).Error()
				kind := "ok"
				switch {
				case err == nil:
				case errors.Is(err, raft.ErrEnqueueTimeout):
					kind = "enqueue timeout"
				case errors.Is(err, raft.ErrTimeout):
					kind = "timeout"
				default:
					kind = err.Error()
				}
				mu.Lock()
				outcomes[kind]++
				mu.Unlock()
			}()
		}
		tick.Stop()
		wg.Wait()
		for i := range c.Nodes() {
			if got := c.Node(i).Raft().CurrentTerm(); got != term {
				t.Fatalf("node %d is in term %d, the leader was elected in %d (outcomes %v)", i, got, term, outcomes)
			}
		}
		if r.State() != raft.Leader {
			t.Fatalf("the leader is now %v (outcomes %v)", r.State(), outcomes)
		}
		for kind, n := range outcomes {
			if kind != "ok" && kind != "enqueue timeout" && kind != "timeout" {
				t.Fatalf("%d applies failed with %q; want only slower applies or timeouts", n, kind)
			}
		}
		if outcomes["ok"] == 0 || wantTurnedAway && outcomes["enqueue timeout"] == 0 {
			t.Fatalf("outcomes %v: want some applies to succeed (and, with small batches, the back-pressure to turn some away before they were queued)", outcomes)
		}
		t.Logf("outcomes under overload: %v", outcomes)
	})
}
