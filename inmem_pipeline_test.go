package raft_test

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest/memnet"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// pipelineRequest returns the AppendEntries of index i: one entry after PrevLogIndex i.
func pipelineRequest(i uint64) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{Term: 1, PrevLogIndex: i, Entries: []*raft.Log{{Index: i + 1, Term: 1, Type: raft.LogCommand, Data: []byte("e")}}}
}

func TestInmemPipeline_CompletesInOrderUnderDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, trs, srv := newServedPair(t, 3)
		n.SetDefaultFaults(memnet.LinkFaults{MaxDelay: 20 * time.Millisecond})
		p, err := trs[0].AppendEntriesPipeline("b", "b")
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()

		const count = 3 * raft.InmemPipelineWindow // the sender must wait for the window
		sendErr := make(chan error, 1)
		go func() {
			for i := range uint64(count) {
				if _, err := p.AppendEntries(pipelineRequest(i), new(raft.AppendEntriesResponse)); err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- nil
		}()
		for i := range uint64(count) {
			f := <-p.Consumer()
			if err := f.Error(); err != nil {
				t.Fatalf("future %d: %v", i, err)
			}
			if got := f.Request().PrevLogIndex; got != i {
				t.Fatalf("future %d delivered for request %d", i, got)
			}
			if got := f.Response().LastLogIndex; got != i+1 {
				t.Fatalf("future %d answered LastLogIndex %d, want %d", i, got, i+1)
			}
		}
		if err := <-sendErr; err != nil {
			t.Fatal(err)
		}
		for i, c := range srv.commands() {
			if got := c.(*raft.AppendEntriesRequest).PrevLogIndex; got != uint64(i) {
				t.Fatalf("receiver got request %d as number %d", got, i)
			}
		}
	})
}

func TestInmemPipeline_LostRequestKeepsOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, trs, srv := newServedPair(t, 1)
		p, err := trs[0].AppendEntriesPipeline("b", "b")
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		n.Cut("a", "b")
		start := time.Now()
		for i := range uint64(3) {
			if _, err := p.AppendEntries(pipelineRequest(i), new(raft.AppendEntriesResponse)); err != nil {
				t.Fatal(err)
			}
			n.Heal() // only the first request is lost
		}
		for i := range uint64(3) {
			f := <-p.Consumer()
			err := f.Error()
			if f.Request().PrevLogIndex != i {
				t.Fatalf("future %d delivered for request %d", i, f.Request().PrevLogIndex)
			}
			if lost := i == 0; lost != errors.Is(err, raft.ErrInmemTimeout) || !lost && err != nil {
				t.Fatalf("future %d: %v", i, err)
			}
		}
		if d := time.Since(start); d != raft.DefaultInmemTimeout {
			t.Fatalf("the lost request failed after %v, want the timeout", d)
		}
		if got := len(srv.commands()); got != 2 {
			t.Fatalf("receiver handled %d requests, want 2", got)
		}
	})
}

func TestInmemPipeline_CloseFailsInflight(t *testing.T) {
	for _, closing := range []string{"pipeline", "transport"} {
		t.Run(closing, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, trs := newInmemTestNet(t, 1, "a", "b")
				held := make(chan raft.RPC, 3) // the test's three requests
				srv := serveInmem(trs[1], heldRPCs(held))
				defer srv.stop()
				p, err := trs[0].AppendEntriesPipeline("b", "b")
				if err != nil {
					t.Fatal(err)
				}
				var futures []raft.AppendFuture
				for i := range uint64(3) {
					f, err := p.AppendEntries(pipelineRequest(i), new(raft.AppendEntriesResponse))
					if err != nil {
						t.Fatal(err)
					}
					futures = append(futures, f)
				}
				synctest.Wait() // all three are with the handler, unanswered
				if closing == "pipeline" {
					p.Close()
				} else {
					trs[0].Close()
				}
				for i, f := range futures {
					if f.Error() == nil {
						t.Fatalf("future %d succeeded after Close", i)
					}
				}
				if _, err := p.AppendEntries(pipelineRequest(3), new(raft.AppendEntriesResponse)); err == nil {
					t.Fatal("AppendEntries after Close succeeded")
				}
				if err := p.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
			})
		})
	}
}

// inmemChaosClient makes random calls from one transport to the others until it made count.
func inmemChaosClient(tr *raft.InmemTransport, peers []raft.ServerAddress, rng *rand.Rand, count int) {
	for range count {
		target := peers[rng.IntN(len(peers))]
		switch rng.IntN(4) {
		case 0:
			var resp raft.RequestVoteResponse
			tr.RequestVote("", target, &raft.RequestVoteRequest{Term: 1}, &resp)
		case 1:
			body := bytes.Repeat([]byte{1}, rng.IntN(4096))
			var resp raft.InstallSnapshotResponse
			tr.InstallSnapshot("", target, &raft.InstallSnapshotRequest{Size: int64(len(body))}, &resp, bytes.NewReader(body))
		case 2:
			p, err := tr.AppendEntriesPipeline("", target)
			if err != nil {
				continue
			}
			for i := range uint64(rng.IntN(20)) {
				p.AppendEntries(pipelineRequest(i), new(raft.AppendEntriesResponse))
			}
			if rng.IntN(2) == 0 {
				for range len(p.Consumer()) {
					<-p.Consumer()
				}
			}
			p.Close()
		default:
			heartbeat(tr, target, 1)
		}
	}
}

// TestInmemNetwork_ChaosLeavesNothingBehind runs random calls over faulty links while nodes
// crash and restart; synctest fails the test if any goroutine is left once all is closed.
func TestInmemNetwork_ChaosLeavesNothingBehind(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { inmemChaos(t, seed) })
	}
}

func inmemChaos(t *testing.T, seed int64) {
	synctest.Test(t, func(t *testing.T) {
		addrs := []raft.ServerAddress{"a", "b", "c", "d", "e"}
		n, trs := newInmemTestNet(t, seed, addrs...)
		n.SetDefaultFaults(memnet.LinkFaults{DropRate: 0.1, DuplicateRate: 0.1, MaxDelay: 10 * time.Millisecond})
		var servers []*inmemServer
		for _, tr := range trs {
			servers = append(servers, serveInmem(tr, nil))
		}
		var wg sync.WaitGroup
		for i, tr := range trs[:3] {
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(i)))
			wg.Go(func() { inmemChaosClient(tr, addrs, rng, 200) })
		}
		rng := rand.New(rand.NewPCG(uint64(seed), 99))
		for range 20 {
			<-time.After(time.Duration(rng.IntN(50)) * time.Millisecond)
			n.Partition(addrs[:rng.IntN(len(addrs))], addrs[2:])
			// Crash and restart e: its old server stops with its transport.
			trs[4].Close()
			servers[4].stop()
			tr, err := n.NewTransport("e")
			if err != nil {
				t.Fatalf("seed %d: restart: %v", seed, err)
			}
			trs[4], servers[4] = tr, serveInmem(tr, nil)
			n.Heal()
		}
		wg.Wait()
		for i, tr := range trs {
			tr.Close()
			servers[i].stop()
		}
		st := n.Stats()
		if st.Delivered+st.Dropped > st.Sent || st.Delivered == 0 || st.Dropped == 0 || st.Duplicated == 0 {
			t.Fatalf("seed %d: Stats %+v", seed, st)
		}
	})
}

// TestInmemNetwork_ConcurrentUseInRealTime drives the network outside synctest, for the race
// detector: callers on every node while the test rewires links.
func TestInmemNetwork_ConcurrentUseInRealTime(t *testing.T) {
	const seed = 1
	addrs := []raft.ServerAddress{"a", "b", "c"}
	n, trs := newInmemTestNet(t, seed, addrs...)
	n.SetTimeout(5 * time.Millisecond)
	n.SetDefaultFaults(memnet.LinkFaults{DropRate: 0.05, DuplicateRate: 0.05, MaxDelay: time.Millisecond})
	for _, tr := range trs {
		defer serveInmem(tr, nil).stop()
	}
	var wg sync.WaitGroup
	for i, tr := range trs {
		rng := rand.New(rand.NewPCG(uint64(seed), uint64(i)))
		wg.Go(func() { inmemChaosClient(tr, addrs, rng, 100) })
	}
	for i := range 50 {
		n.Disconnect(addrs[i%3], addrs[(i+1)%3])
		n.SetFaults(addrs[i%3], addrs[(i+2)%3], memnet.LinkFaults{DropRate: 0.5})
		n.Heal()
		n.ClearFaults()
	}
	wg.Wait()
	if st := n.Stats(); st.Delivered == 0 {
		t.Fatalf("seed %d: nothing delivered: %+v", seed, st)
	}
}

func benchmarkInmemCall(b *testing.B, entries int) {
	_, trs, _ := newServedPair(b, 1)
	req := &raft.AppendEntriesRequest{Term: 1}
	for i := range entries {
		req.Entries = append(req.Entries, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: make([]byte, 128)})
	}
	var resp raft.AppendEntriesResponse
	b.ReportAllocs()
	for b.Loop() {
		if err := trs[0].AppendEntries("b", "b", req, &resp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInmemTransport_Heartbeat(b *testing.B)            { benchmarkInmemCall(b, 0) }
func BenchmarkInmemTransport_AppendEntries64x128B(b *testing.B) { benchmarkInmemCall(b, 64) }

func BenchmarkInmemPipeline_AppendEntries(b *testing.B) {
	_, trs, _ := newServedPair(b, 1)
	p, err := trs[0].AppendEntriesPipeline("b", "b")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for range b.N {
			if err := (<-p.Consumer()).Error(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := p.AppendEntries(pipelineRequest(uint64(i)), new(raft.AppendEntriesResponse)); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(fmt.Errorf("pipeline: %w", err))
	}
}
