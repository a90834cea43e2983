package raft_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// contextCalls are the context forms of every blocking call, each on r.
func contextCalls(c *raftest.Cluster, r *raft.Raft, spare int) map[string]func(ctx context.Context) error {
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersion, Size: 1}
	return map[string]func(ctx context.Context) error{
		"ApplyContext":        func(ctx context.Context) error { return r.ApplyContext(ctx, []byte("x")).Error() },
		"BarrierContext":      func(ctx context.Context) error { return r.BarrierContext(ctx).Error() },
		"VerifyLeaderContext": func(ctx context.Context) error { return r.VerifyLeaderContext(ctx).Error() },
		"ReadIndexContext":    func(ctx context.Context) error { return r.ReadIndexContext(ctx).Error() },
		"SnapshotContext":     func(ctx context.Context) error { return r.SnapshotContext(ctx).Error() },
		"RestoreContext": func(ctx context.Context) error {
			return r.RestoreContext(ctx, meta, bytes.NewReader([]byte{1}))
		},
		"AddVoterContext": func(ctx context.Context) error {
			return r.AddVoterContext(ctx, c.Node(spare).ID, c.Node(spare).Addr, 0).Error()
		},
		"AddNonvoterContext": func(ctx context.Context) error {
			return r.AddNonvoterContext(ctx, c.Node(spare).ID, c.Node(spare).Addr, 0).Error()
		},
		"DemoteVoterContext":        func(ctx context.Context) error { return r.DemoteVoterContext(ctx, c.Node(spare).ID, 0).Error() },
		"RemoveServerContext":       func(ctx context.Context) error { return r.RemoveServerContext(ctx, c.Node(spare).ID, 0).Error() },
		"LeadershipTransferContext": func(ctx context.Context) error { return r.LeadershipTransferContext(ctx).Error() },
		"LeadershipTransferToServerContext": func(ctx context.Context) error {
			return r.LeadershipTransferToServerContext(ctx, c.Node(spare).ID, c.Node(spare).Addr).Error()
		},
	}
}

// A context cancelled before the call: every context form fails with an error matching
// ctx.Err() and ErrEnqueueTimeout (the operation never started), and nothing changes.
func TestContext_CancelledBeforeCallTakesNoEffect(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 4, InitialVoters: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		mustApply(t, c, "x")
		before := r.LastIndex()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for name, call := range contextCalls(c, r, 3) {
			err := call(ctx)
			if !errors.Is(err, context.Canceled) || !errors.Is(err, raft.ErrEnqueueTimeout) {
				t.Errorf("%s with a cancelled context: %v, want context.Canceled and ErrEnqueueTimeout", name, err)
			}
		}
		if r.LastIndex() != before || c.Leader() != leader {
			t.Fatalf("cancelled calls changed the log (%d -> %d) or the leader", before, r.LastIndex())
		}
		if n := len(r.GetConfiguration().Configuration().Servers); n != 3 {
			t.Fatalf("cancelled membership changes left %d servers", n)
		}
	})
}

// A context that ends while the call waits: the error matches ctx.Err() and ErrTimeout (the
// operation reached the leader and may still take effect). The leader here cannot reach a
// quorum, so nothing can complete before the deadline.
func TestContext_DeadlineWhileWaitingMayStillTakeEffect(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 5, InitialVoters: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		mustApply(t, c, "x")
		for _, i := range others(c, leader) {
			c.Net.Cut(c.Node(leader).Addr, c.Node(i).Addr)
		}
		calls := map[string]func(ctx context.Context) error{
			"ApplyContext":        func(ctx context.Context) error { return r.ApplyContext(ctx, []byte("y")).Error() },
			"BarrierContext":      func(ctx context.Context) error { return r.BarrierContext(ctx).Error() },
			"VerifyLeaderContext": func(ctx context.Context) error { return r.VerifyLeaderContext(ctx).Error() },
			"ReadIndexContext":    func(ctx context.Context) error { return r.ReadIndexContext(ctx).Error() },
		}
		for name, call := range calls {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			err := call(ctx)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, raft.ErrTimeout) {
				t.Errorf("%s past its deadline: %v, want context.DeadlineExceeded and ErrTimeout", name, err)
			}
		}
		c.Heal()
	})
}

// Context forms succeed like their plain forms on a healthy cluster.
func TestContext_FormsSucceed(t *testing.T) {
	raftest.Run(t, raftest.Options{Nodes: 4, InitialVoters: 3}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		mustApply(t, c, "x")
		var snap raft.SnapshotFuture
		steps := []struct {
			name string
			call func() error
		}{
			{"BarrierContext", func() error { return r.BarrierContext(ctx).Error() }},
			{"VerifyLeaderContext", func() error { return r.VerifyLeaderContext(ctx).Error() }},
			{"ReadIndexContext", func() error { return r.ReadIndexContext(ctx).Error() }},
			{"SnapshotContext", func() error { snap = r.SnapshotContext(ctx); return snap.Error() }},
			{"AddNonvoterContext", func() error { return r.AddNonvoterContext(ctx, c.Node(3).ID, c.Node(3).Addr, 0).Error() }},
			{"AddVoterContext", func() error { return r.AddVoterContext(ctx, c.Node(3).ID, c.Node(3).Addr, 0).Error() }},
			{"DemoteVoterContext", func() error { return r.DemoteVoterContext(ctx, c.Node(3).ID, 0).Error() }},
			{"RemoveServerContext", func() error { return r.RemoveServerContext(ctx, c.Node(3).ID, 0).Error() }},
			{"RestoreContext", func() error {
				meta, rc, err := snap.Open()
				if err != nil {
					return err
				}
				defer rc.Close()
				return r.RestoreContext(ctx, meta, rc)
			}},
			{"LeadershipTransferContext", func() error { return r.LeadershipTransferContext(ctx).Error() }},
		}
		for _, s := range steps {
			if err := s.call(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		c.WaitFor(waitLong, "another leader", func() bool { l := c.Leader(); return l >= 0 && l != leader })
	})
}
