package raftest_test

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

func makeLogs(from, n uint64) []*raft.Log {
	var logs []*raft.Log
	for i := from; i < from+n; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "e%d", i)})
	}
	return logs
}

func lastIndexOf(t *testing.T, s raft.LogStore) uint64 {
	t.Helper()
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return last
}

func TestIncarnation_CrashInStoreLogsKeepsAPrefixOfTheBatch(t *testing.T) {
	seen := make(map[uint64]bool)
	for seed := int64(1); seed <= 40; seed++ {
		disk := raft.NewInmemStore()
		if err := disk.StoreLogs(makeLogs(1, 5)); err != nil {
			t.Fatal(err)
		}
		inc := raftest.NewIncarnation(seed, nil)
		logs := inc.LogStore(disk)
		inc.CrashAt(raftest.CrashInStoreLogs, 1)
		if err := logs.StoreLogs(makeLogs(6, 2)); err != nil {
			t.Fatalf("the write before the armed one: %v", err)
		}
		if err := logs.StoreLogs(makeLogs(8, 10)); !errors.Is(err, raftest.ErrCrashed) {
			t.Fatalf("armed StoreLogs returned %v, want ErrCrashed", err)
		}
		if !inc.Crashed() {
			t.Fatal("the incarnation did not crash at its armed point")
		}
		last := lastIndexOf(t, disk)
		if last < 7 || last > 17 {
			t.Fatalf("seed %d: the disk ends at %d, want the acknowledged 7 plus a prefix of [8, 17]", seed, last)
		}
		for i := uint64(1); i <= last; i++ {
			var l raft.Log
			if err := disk.GetLog(i, &l); err != nil || string(l.Data) != fmt.Sprintf("e%d", i) {
				t.Fatalf("seed %d: entry %d: %v %q", seed, i, err, l.Data)
			}
		}
		seen[last] = true
		if _, err := logs.LastIndex(); !errors.Is(err, raftest.ErrCrashed) {
			t.Fatalf("a read after the crash: %v, want ErrCrashed", err)
		}
		if err := logs.StoreLogs(makeLogs(last+1, 1)); !errors.Is(err, raftest.ErrCrashed) || lastIndexOf(t, disk) != last {
			t.Fatalf("a write after the crash: %v, disk now ends at %d", err, lastIndexOf(t, disk))
		}
	}
	if !seen[7] || len(seen) < 3 {
		t.Fatalf("prefixes kept over 40 seeds: %v; want nothing, some and more", seen)
	}
}

func TestIncarnation_CrashDuringASlowWriteSettlesItAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		disk := raft.NewInmemStore()
		inc := raftest.NewIncarnation(7, nil)
		inc.SetDiskFaults(raftest.DiskFaults{MinLatency: time.Second, MaxLatency: time.Second})
		logs := inc.LogStore(disk)
		done := make(chan error, 1)
		go func() { done <- logs.StoreLogs(makeLogs(1, 8)) }()
		synctest.Wait() // the write is waiting for the disk (every goroutine of the bubble blocked)
		inc.Crash()
		after := lastIndexOf(t, disk)
		if err := <-done; !errors.Is(err, raftest.ErrCrashed) {
			t.Fatalf("the interrupted write returned %v", err)
		}
		time.Sleep(2 * time.Second) // virtual time: long past the write's disk latency
		if got := lastIndexOf(t, disk); got != after || got > 8 {
			t.Fatalf("the disk ended at %d when Crash returned and at %d later", after, got)
		}
	})
}

func TestIncarnation_CrashInStableSetKeepsOldOrNew(t *testing.T) {
	seen := make(map[uint64]bool)
	for seed := int64(1); seed <= 20; seed++ {
		disk := raft.NewInmemStore()
		inc := raftest.NewIncarnation(seed, nil)
		stable := inc.StableStore(disk)
		if err := stable.SetUint64([]byte("k"), 1); err != nil {
			t.Fatal(err)
		}
		inc.CrashAt(raftest.CrashInStableSet, 0)
		if err := stable.SetUint64([]byte("k"), 2); !errors.Is(err, raftest.ErrCrashed) {
			t.Fatalf("armed set returned %v", err)
		}
		v, _ := disk.GetUint64([]byte("k"))
		if v != 1 && v != 2 {
			t.Fatalf("value %d after a crash in the set of 2 over 1", v)
		}
		seen[v] = true
	}
	if !seen[1] || !seen[2] {
		t.Fatalf("values seen: %v; want both the old and the new", seen)
	}
}

func TestIncarnation_CrashInDeleteRangeKeepsBeforeOrAfter(t *testing.T) {
	seen := make(map[uint64]bool)
	for seed := int64(1); seed <= 20; seed++ {
		disk := raft.NewInmemStore()
		_ = disk.StoreLogs(makeLogs(1, 10))
		inc := raftest.NewIncarnation(seed, nil)
		inc.CrashAt(raftest.CrashInDeleteRange, 0)
		if err := inc.LogStore(disk).DeleteRange(1, 6); !errors.Is(err, raftest.ErrCrashed) {
			t.Fatalf("armed DeleteRange returned %v", err)
		}
		first, _ := disk.FirstIndex()
		if first != 1 && first != 7 {
			t.Fatalf("first index %d after a crash deleting [1, 6]", first)
		}
		seen[first] = true
	}
	if !seen[1] || !seen[7] {
		t.Fatalf("first indexes seen: %v; want before and after", seen)
	}
}

// snapshotIDs lists a store's snapshots.
func snapshotIDs(t *testing.T, s raft.SnapshotStore) []string {
	t.Helper()
	metas, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range metas {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestIncarnation_SnapshotExistsOnlyOnceItsSinkClosed(t *testing.T) {
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "a"}}}
	// A sink still open at the crash leaves nothing.
	disk := raft.NewInmemSnapshotStore()
	inc := raftest.NewIncarnation(1, nil)
	sink, err := inc.SnapshotStore(disk).Create(1, 10, 1, conf, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	inc.Crash()
	if ids := snapshotIDs(t, disk); len(ids) != 0 {
		t.Fatalf("an unclosed snapshot survived the crash: %v", ids)
	}
	if err := sink.Close(); !errors.Is(err, raftest.ErrCrashed) {
		t.Fatalf("Close after the crash: %v", err)
	}
	if ids := snapshotIDs(t, disk); len(ids) != 0 {
		t.Fatalf("Close after the crash stored the snapshot: %v", ids)
	}
	// A crash inside Close leaves it or not; a crash inside Write leaves nothing.
	seen := make(map[int]bool)
	for seed := int64(1); seed <= 20; seed++ {
		disk := raft.NewInmemSnapshotStore()
		inc := raftest.NewIncarnation(seed, nil)
		sink, _ := inc.SnapshotStore(disk).Create(1, 10, 1, conf, 1)
		inc.CrashAt(raftest.CrashInSnapshotClose, 0)
		_, _ = sink.Write([]byte("data"))
		if err := sink.Close(); !errors.Is(err, raftest.ErrCrashed) {
			t.Fatalf("armed Close returned %v", err)
		}
		seen[len(snapshotIDs(t, disk))] = true
	}
	if !seen[0] || !seen[1] {
		t.Fatalf("snapshots kept after a crash in Close: %v; want both outcomes", seen)
	}
	disk = raft.NewInmemSnapshotStore()
	inc = raftest.NewIncarnation(1, nil)
	inc.CrashAt(raftest.CrashInSnapshotWrite, 1)
	sink, _ = inc.SnapshotStore(disk).Create(1, 10, 1, conf, 1)
	_, _ = sink.Write([]byte("first"))
	if _, err := sink.Write([]byte("second")); !errors.Is(err, raftest.ErrCrashed) || len(snapshotIDs(t, disk)) != 0 {
		t.Fatalf("armed Write returned %v and left %v", err, snapshotIDs(t, disk))
	}
}

// countingFSM counts applies.
type countingFSM struct{ applied int }

func (f *countingFSM) Apply(*raft.Log) any                 { f.applied++; return nil }
func (f *countingFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("none") }
func (f *countingFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

func TestIncarnation_CrashedFSMAppliesNothing(t *testing.T) {
	inner := &countingFSM{}
	inc := raftest.NewIncarnation(1, nil)
	fsm := inc.FSM(inner)
	fsm.Apply(&raft.Log{Index: 1})
	inc.CrashAt(raftest.CrashInFSMApply, 0)
	if resp := fsm.Apply(&raft.Log{Index: 2}); !errors.Is(resp.(error), raftest.ErrCrashed) {
		t.Fatalf("armed Apply answered %v", resp)
	}
	if resp := fsm.Apply(&raft.Log{Index: 3}); !errors.Is(resp.(error), raftest.ErrCrashed) || inner.applied != 1 {
		t.Fatalf("Apply after the crash answered %v; the FSM applied %d entries, want 1", resp, inner.applied)
	}
	if _, err := fsm.Snapshot(); !errors.Is(err, raftest.ErrCrashed) {
		t.Fatalf("Snapshot after the crash: %v", err)
	}
}

func TestIncarnation_CrashedTransportSendsAndReceivesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := raft.NewInmemNetwork()
		innerA, _ := net.NewTransport("a")
		b, _ := net.NewTransport("b")
		defer b.Close()
		inc := raftest.NewIncarnation(1, nil)
		a := inc.Transport(innerA)
		// b calls a; a takes the request, the crash comes, then a answers.
		taken := make(chan raft.RPC)
		go func() { taken <- <-a.Consumer() }()
		callErr := make(chan error, 1)
		go func() {
			var resp raft.RequestVoteResponse
			callErr <- b.RequestVote("a", "a", &raft.RequestVoteRequest{Term: 1}, &resp)
		}()
		rpc := <-taken
		inc.Crash()
		rpc.Respond(&raft.RequestVoteResponse{Term: 1, Granted: true}, nil)
		if err := <-callErr; err == nil {
			t.Fatal("an answer given after the crash reached the caller")
		}
		var resp raft.RequestVoteResponse
		if err := a.RequestVote("b", "b", &raft.RequestVoteRequest{Term: 1}, &resp); !errors.Is(err, raftest.ErrCrashed) {
			t.Fatalf("a call by the crashed node: %v", err)
		}
		// The address is free again for the next incarnation.
		again, err := net.NewTransport("a")
		if err != nil {
			t.Fatalf("restarting at the crashed node's address: %v", err)
		}
		_ = again.Close()
	})
}

func TestCluster_CrashAtArmedPointAndRestart(t *testing.T) {
	for _, p := range raftest.CrashPoints() {
		t.Run(p.String(), func(t *testing.T) {
			opts := raftest.Options{Config: func(c *raft.Config) {
				c.SnapshotThreshold = 8
				c.TrailingLogs = 4
				c.SnapshotInterval = 20 * time.Millisecond
			}}
			raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
				leader := c.WaitLeader(wait)
				victim := (leader + 1) % 3
				if p == raftest.CrashInStoreLogs {
					victim = leader
				}
				if p == raftest.CrashInInstallSnapshot || p == raftest.CrashInFSMRestore {
					// The follower must fall behind compaction to get a snapshot.
					c.Crash(victim)
					for i := 0; i < 40; i++ {
						<-time.After(5 * time.Millisecond)
						if _, err := c.Apply(fmt.Appendf(nil, "behind-%d", i), wait); err != nil {
							t.Fatal(err)
						}
					}
					c.WaitFor(wait, "a compacted leader log", func() bool {
						first, _ := c.Node(leader).Logs.FirstIndex()
						return first > 2
					})
					c.Start(victim)
				}
				c.CrashAt(victim, p, 0)
				for i := 0; c.Node(victim).Running(); i++ {
					if i > 200 {
						t.Fatalf("node %d never reached its armed crash point %v", victim, p)
					}
					<-time.After(5 * time.Millisecond) // pace: let timers (snapshots, elections) run
					if _, err := c.Apply(fmt.Appendf(nil, "load-%d", i), time.Second); err != nil {
						t.Logf("apply: %v", err)
					}
					if p == raftest.CrashInStableSet && i == 5 {
						c.Isolate(leader) // a new election writes the term
					}
				}
				c.Heal()
				c.Start(victim)
				c.WaitLeader(wait)
				f, err := c.Apply([]byte("after"), wait)
				if err != nil {
					t.Fatal(err)
				}
				c.WaitSameCommands(f.Index(), wait)
				c.CheckSafety()
			})
		})
	}
}

func TestCluster_CrashDoesNotWaitForAStalledDisk(t *testing.T) {
	raftest.Run(t, raftest.Options{}, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(wait)
		if _, err := c.Apply([]byte("before"), wait); err != nil {
			t.Fatal(err)
		}
		c.SetDiskFaults(leader, raftest.DiskFaults{MinLatency: time.Hour, MaxLatency: time.Hour})
		r := c.Node(leader).Raft()
		f := r.Apply([]byte("stalled"), 0) // the leader's own write hangs on its disk
		synctest.Wait()                    // the write reached the stalled disk: everything else waits
		start := time.Now()
		c.Crash(leader)
		if d := time.Since(start); d > 0 {
			t.Fatalf("Crash waited %v (virtual) for the stalled write", d)
		}
		c.SetDiskFaults(leader, raftest.DiskFaults{})
		c.Start(leader)
		c.WaitLeader(wait)
		g, err := c.Apply([]byte("after"), wait)
		if err != nil {
			t.Fatal(err)
		}
		cmds := c.WaitSameCommands(g.Index(), wait)
		c.CheckSafety()
		// The followers can commit the entry while the leader's own write hangs (the leader
		// writes in parallel with replication): an acknowledgement is then kept.
		if err := f.Error(); err == nil && !slices.Contains(cmds, "stalled") {
			t.Fatalf("the acknowledged write is lost: %v", cmds)
		}
	})
}

// A Crash that finds another under way returns only once that one took effect, its
// transports closed: the test restarting the node reuses the address at once.
func TestIncarnation_CrashWaitsForACrashUnderWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := raft.NewInmemNetwork()
		inner, err := net.NewTransport("n1")
		if err != nil {
			t.Fatal(err)
		}
		hold := make(chan struct{})
		inc := raftest.NewIncarnation(1, func() { <-hold }) // the first crash lingers in onCrash
		inc.Transport(inner)
		go inc.Crash()
		synctest.Wait()
		second := make(chan struct{})
		go func() {
			inc.Crash()
			close(second)
		}()
		synctest.Wait()
		select {
		case <-second:
			t.Fatal("the second Crash returned while the first was still under way")
		default:
		}
		close(hold)
		<-second
		if _, err := net.NewTransport("n1"); err != nil {
			t.Fatalf("the address is not free once Crash returned: %v", err)
		}
	})
}
