package raft_test

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Core throughput: a 3-node cluster over the in-memory transport with in-memory stores, in
// real time (raftest.New), with concurrent clients each keeping one Apply in flight through
// the leader. cmd/raftbench measures the same over TCP and wal.

func BenchmarkApply_1Client128B(b *testing.B)    { benchApply(b, 1, 128) }
func BenchmarkApply_16Clients128B(b *testing.B)  { benchApply(b, 16, 128) }
func BenchmarkApply_64Clients128B(b *testing.B)  { benchApply(b, 64, 128) }
func BenchmarkApply_64Clients4KiB(b *testing.B)  { benchApply(b, 64, 4<<10) }
func BenchmarkApply_256Clients128B(b *testing.B) { benchApply(b, 256, 128) }

// benchApply applies b.N commands of size bytes from clients goroutines and reports
// applies/s and per-apply latency (ns/op is wall time divided by b.N).
func benchApply(b *testing.B, clients, size int) {
	c := benchCluster(b)
	r := c.Node(c.WaitLeader(10 * time.Second)).Raft()
	cmd := make([]byte, size) // shared: raft never modifies a command
	var next atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(int64(size))
	b.ResetTimer()
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() { // exits once b.N applies were started, or on the first error
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := r.Apply(cmd, 10*time.Second).Error(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "applies/s")
}

// Linearizable reads on the same cluster: ReadIndexContext on the leader (confirmation
// rounds), with a lease, and on a follower (one ReadIndex RPC per batch), with clients
// goroutines each keeping one read in flight. allocs/op counts the whole process (three nodes
// and the clients) per read; raftbench -read compares the kinds with reads through the log.

func BenchmarkReadIndex_Leader1Client(b *testing.B)      { benchRead(b, 1, benchOnLeader) }
func BenchmarkReadIndex_Leader256Clients(b *testing.B)   { benchRead(b, 256, benchOnLeader) }
func BenchmarkReadIndex_Lease1Client(b *testing.B)       { benchRead(b, 1, benchLease) }
func BenchmarkReadIndex_Lease256Clients(b *testing.B)    { benchRead(b, 256, benchLease) }
func BenchmarkReadIndex_Follower1Client(b *testing.B)    { benchRead(b, 1, benchOnFollower) }
func BenchmarkReadIndex_Follower256Clients(b *testing.B) { benchRead(b, 256, benchOnFollower) }

type benchReadKind int

const (
	benchOnLeader benchReadKind = iota
	benchLease
	benchOnFollower
)

// benchRead runs b.N reads of kind from clients goroutines and reports reads/s.
func benchRead(b *testing.B, clients int, kind benchReadKind) {
	c := benchCluster(b)
	leader := c.WaitLeader(10 * time.Second)
	r := c.Node(leader).Raft()
	if kind == benchOnFollower {
		r = c.Node((leader + 1) % 3).Raft()
	}
	// A follower's ReadIndex RPC waits for the leader's round, which a loaded machine
	// stretches past the network's 50ms default.
	c.Net.SetTimeout(10 * time.Second)
	// The follower must know the leader, and the leader's lease must hold: a new leader
	// takes none before HeartbeatTimeout passed.
	c.WaitFor(10*time.Second, "a first read of the kind", func() bool {
		f := r.ReadIndexContext(context.Background(), raft.WithLease(kind == benchLease))
		return f.Error() == nil && (kind != benchLease || raft.ReadKind(f) == "leader_lease")
	})
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() { // exits once b.N reads were started, or on the first error
			defer wg.Done()
			ctx := context.Background()
			for next.Add(1) <= int64(b.N) {
				if err := r.ReadIndexContext(ctx, raft.WithLease(kind == benchLease)).Error(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}

// benchCluster starts the benchmarks' 3-node cluster in real time.
func benchCluster(b *testing.B) *raftest.Cluster {
	return raftest.New(b, raftest.Options{
		Nodes:    3,
		LogLevel: "error",
		NewFSM:   func(raft.ServerID) raft.FSM { return discardFSM{} },
		Config: func(conf *raft.Config) {
			// Real time on a loaded machine: leave room so the leader is not deposed.
			conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Second, time.Second, time.Second
		},
	})
}

// discardFSM applies nothing and snapshots nothing, so a benchmark measures raft alone.
type discardFSM struct{}

func (discardFSM) Apply(*raft.Log) any                  { return nil }
func (discardFSM) Snapshot() (raft.FSMSnapshot, error)  { return discardFSM{}, nil }
func (discardFSM) Restore(rc io.ReadCloser) error       { return rc.Close() }
func (discardFSM) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (discardFSM) Release()                             {}
