package raft_test

import (
	"errors"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// slowReader hands out its data a few bytes at a time, waiting delay before each piece
// (virtual time in raftest's bubble): a backup read from a slow source.
type slowReader struct {
	read  atomic.Bool // set by the first Read
	data  []byte
	chunk int
	delay time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	s.read.Store(true)
	time.Sleep(s.delay)
	n := copy(p[:min(len(p), s.chunk)], s.data)
	s.data = s.data[n:]
	return n, nil
}

// slowRestoreTime is how long the slow part of a slow Restore takes: many election timeouts.
const slowRestoreTime = 20 * time.Second

// slowRestore sets up a Restore on the leader whose data streams in over slowRestoreTime, or
// whose FSM restore takes that long, and returns the reader to restore from and a function
// that reports whether the slow part began.
func slowRestore(c *raftest.Cluster, leader int, data []byte, slowFSM bool) (io.Reader, func() bool) {
	if slowFSM {
		fsm := fsmOf(c, leader)
		before := fsm.restores.Load()
		fsm.restoreDelay.Store(int64(slowRestoreTime))
		return &slowReader{data: data, chunk: len(data)}, func() bool { return fsm.restores.Load() > before }
	}
	const pieces = 40
	r := &slowReader{data: data, chunk: max(1, len(data)/pieces), delay: slowRestoreTime / pieces}
	return r, r.read.Load
}

// A slow Restore on the leader (its data streams in slowly, or its FSM restores slowly) must
// not cost the cluster its leader, and must not keep the leader from doing its job: the main
// loop goes on answering RPCs and ticking while the data is stored and the FSM restores. With
// every node connected the followers keep the leader and the restore commits. With the leader
// cut off in the middle of the restore, it notices the lost quorum and steps down within its
// lease, as it would at any other time, instead of staying leader for the whole restore (a
// second leader for that long, and a main loop answering no one); the restore then fails with
// ErrLeadershipLost, and the old leader ends with the cluster's commands, not the backup.
func TestRestore_SlowRestoreKeepsTheLeaderAtWork(t *testing.T) {
	for _, slowFSM := range []bool{false, true} {
		name := "slow data"
		if slowFSM {
			name = "slow FSM"
		}
		t.Run(name+", connected", func(t *testing.T) { testSlowRestoreConnected(t, slowFSM) })
		t.Run(name+", leader cut off", func(t *testing.T) { testSlowRestoreCutOff(t, slowFSM) })
	}
}

func testSlowRestoreConnected(t *testing.T, slowFSM bool) {
	raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 3)
		r := c.Node(leader).Raft()
		term := r.CurrentTerm()
		applyN(t, c, "overwritten", 2)
		start := time.Now()
		reader, _ := slowRestore(c, leader, data, slowFSM)
		if err := r.Restore(meta, reader, 0); err != nil {
			t.Fatalf("restore: %v", err)
		}
		if took := time.Since(start); took < slowRestoreTime {
			t.Fatalf("the restore took %v, less than the slow part's %v: the test is not slow", took, slowRestoreTime)
		}
		for i := range c.Nodes() {
			if got := c.Node(i).Raft().CurrentTerm(); got != term {
				t.Fatalf("node %d is in term %d after the restore, was %d: an election ran", i, got, term)
			}
		}
		g := mustApply(t, c, "after")
		c.WaitApplied(g.Index(), waitLong)
		expectCommands(t, c, []string{"kept-0", "kept-1", "kept-2", "after"})
		c.CheckSafety()
	})
}

func testSlowRestoreCutOff(t *testing.T, slowFSM bool) {
	raftest.Run(t, manualSnapshots(snapOpts(3)), func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 3)
		r := c.Node(leader).Raft()
		applyN(t, c, "later", 2)
		reader, slowPartBegan := slowRestore(c, leader, data, slowFSM)
		done := make(chan error, 1)
		go func() { done <- r.Restore(meta, reader, 0) }()
		c.WaitFor(slowRestoreTime/2, "the slow part of the restore to begin", slowPartBegan)
		c.Isolate(leader)
		cutOff := time.Now()
		c.WaitFor(slowRestoreTime/2, "the cut-off leader to step down", func() bool {
			return r.State() != raft.Leader
		})
		t.Logf("the cut-off leader stepped down %v after it was cut off", time.Since(cutOff))
		select {
		case err := <-done:
			t.Fatalf("the restore ended (%v) before its slow part did", err)
		default:
		}
		if err := <-done; !errors.Is(err, raft.ErrLeadershipLost) {
			t.Fatalf("restore by a leader that lost its quorum: %v, want ErrLeadershipLost", err)
		}
		c.WaitFor(waitLong, "a new leader among the others", func() bool {
			l := c.Leader()
			return l >= 0 && l != leader
		})
		f := applyN(t, c, "after", 2)
		c.Heal()
		got := c.WaitSameCommands(f, waitLong)
		want := []string{"kept-0", "kept-1", "kept-2", "later-0", "later-1", "after-0", "after-1"}
		if !slices.Equal(got, want) {
			t.Fatalf("the cluster holds %v, want %v", got, want)
		}
		if isStopped(c.Node(leader).Raft()) {
			t.Fatalf("the old leader stopped: %v", c.Node(leader).Raft().ShutdownCause())
		}
		c.CheckSafety()
	})
}
