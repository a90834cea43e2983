package raft_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// A Restore changes the leader's FSM at once, before the cluster committed it, and may never
// commit: the leader can crash before any follower stored the snapshot, and the next leader
// goes on without it. A read must not observe such a state, or a later read on the new leader
// could not be ordered after it. Here the followers restore slowly, so the restore stays
// uncommitted for a while although every follower keeps answering heartbeats (the lease
// holds): no read on the leader may succeed in that window; each waits until the restore
// committed.
func TestRead_NeverObservesAnUncommittedRestore(t *testing.T) {
	opts := manualSnapshots(snapOpts(3))
	base := opts.Config
	opts.Config = func(c *raft.Config) {
		base(c)
		c.LeaseReads = true
	}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader, meta, data := keptAndBackedUp(t, c, 3)
		last := applyN(t, c, "later", 2)
		c.WaitApplied(last, waitLong)
		r := c.Node(leader).Raft()
		for _, i := range others(c, leader) {
			c.SetFSMFaults(i, raftest.FSMFaults{MinLatency: time.Second, MaxLatency: time.Second})
		}
		restores := fsmOf(c, leader).restores.Load()
		restored := make(chan error, 1)
		go func() { restored <- r.Restore(meta, bytes.NewReader(data), waitLong) }()
		c.WaitFor(waitLong, "the leader's FSM restored from the backup", func() bool {
			return fsmOf(c, leader).restores.Load() > restores
		})
		for _, lease := range []bool{true, false} {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			f := r.ReadIndexContext(ctx, raft.WithLease(lease))
			err := f.Error()
			cancel()
			select {
			case err := <-restored:
				t.Fatalf("the restore ended (%v) before the read could be checked; the test needs it pending", err)
			default:
			}
			if err == nil {
				t.Fatalf("a read (%s) succeeded while the restore was uncommitted; the FSM held %v, which the cluster may never hold",
					raft.ReadKind(f), commands(c, leader))
			}
			// It waits for the restore to settle, so here the context ends it.
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, raft.ErrTimeout) {
				t.Fatalf("read (lease %v) during an uncommitted restore: %v, want ErrTimeout and the context's error", lease, err)
			}
		}
		// A read started now waits and succeeds once the restore committed.
		waiting := r.ReadIndex(waitLong)
		if err := <-restored; err != nil {
			t.Fatalf("restore: %v", err)
		}
		if err := waiting.Error(); err != nil {
			t.Fatalf("read waiting for the restore to commit: %v", err)
		}
		if got, want := commands(c, leader), []string{"kept-0", "kept-1", "kept-2"}; !slices.Equal(got, want) {
			t.Fatalf("the leader holds %v after the restore, want %v", got, want)
		}
		c.CheckSafety()
	})
}
