package raft_test

import (
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
	c := raftest.New(b, raftest.Options{
		Nodes:    3,
		LogLevel: "error",
		NewFSM:   func(raft.ServerID) raft.FSM { return discardFSM{} },
		Config: func(conf *raft.Config) {
			// Real time on a loaded machine: leave room so the leader is not deposed.
			conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Second, time.Second, time.Second
		},
	})
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

// discardFSM applies nothing and snapshots nothing, so a benchmark measures raft alone.
type discardFSM struct{}

func (discardFSM) Apply(*raft.Log) any                  { return nil }
func (discardFSM) Snapshot() (raft.FSMSnapshot, error)  { return discardFSM{}, nil }
func (discardFSM) Restore(rc io.ReadCloser) error       { return rc.Close() }
func (discardFSM) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (discardFSM) Release()                             {}
