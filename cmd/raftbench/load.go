package main

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftkit/raft"
)

// result is what one load run measured.
type result struct {
	ops     int           // acknowledged applies
	errors  int           // applies that failed
	bytes   int64         // command bytes acknowledged
	elapsed time.Duration // from the first apply to the last answer
	latency []time.Duration
}

// leaderFunc returns the current leader, waiting for one if needed.
type leaderFunc func() (*raft.Raft, error)

// operation runs one client operation against the current leader and returns how many
// payload bytes it carried.
type operation func(leader *raft.Raft, seq uint64) (int, error)

// applyOps makes each client's operation: apply a cfg.size-byte command.
func applyOps(cfg config) func(client int) operation {
	pool := newPayloadPool(cfg.seed, cfg.size) // shared, read-only
	return func(client int) operation {
		payloads := newPayloads(pool, client)
		return func(leader *raft.Raft, seq uint64) (int, error) {
			cmd := payloads.next(seq)
			return len(cmd), leader.Apply(cmd, cfg.timeout).Error()
		}
	}
}

// runLoad runs cfg.clients concurrent clients, each running the operations newOp makes for
// it one at a time until cfg.duration passed or cfg.ops operations were started in total.
func runLoad(cfg config, leader leaderFunc, newOp func(client int) operation) (result, error) {
	r, err := leader()
	if err != nil {
		return result{}, err
	}
	var cur atomic.Pointer[raft.Raft]
	cur.Store(r)
	var started atomic.Int64
	deadline := time.Now().Add(cfg.duration)
	more := func() bool {
		if cfg.ops > 0 {
			return started.Add(1) <= int64(cfg.ops)
		}
		return time.Now().Before(deadline)
	}
	results := make([]result, cfg.clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range results {
		wg.Add(1)
		go func() { // owned by runLoad, which waits; exits when more says stop
			defer wg.Done()
			results[i] = runClient(newOp(i), &cur, leader, more)
		}()
	}
	wg.Wait()
	total := result{elapsed: time.Since(start)}
	for _, cr := range results {
		total.ops += cr.ops
		total.errors += cr.errors
		total.bytes += cr.bytes
		total.latency = append(total.latency, cr.latency...)
	}
	slices.Sort(total.latency)
	return total, nil
}

// runClient runs op until more returns false. On an error it looks for the leader again and
// goes on with the next operation: a benchmark counts failures rather than retrying them.
func runClient(op operation, cur *atomic.Pointer[raft.Raft], leader leaderFunc, more func() bool) result {
	var res result
	for seq := uint64(0); more(); seq++ {
		t0 := time.Now()
		n, err := op(cur.Load(), seq)
		lat := time.Since(t0)
		if err != nil {
			res.errors++
			if errors.Is(err, raft.ErrRaftShutdown) {
				return res
			}
			if r, lerr := leader(); lerr == nil {
				cur.Store(r)
			}
			continue
		}
		res.ops++
		res.bytes += int64(n)
		res.latency = append(res.latency, lat)
	}
	return res
}

// payloads makes a client's commands: each is a body from a pool the clients share, filled by
// a PRNG seeded with the run seed, stamped with the client and sequence number, so every run
// with the same flags sends the same bytes. The pool is shared so that the load generator's
// own memory does not grow with clients times command size and blur the peak RSS of the
// nodes.
type payloads struct {
	client uint32
	pool   [][]byte // shared, read-only
}

// payloadPool is how many distinct random bodies the clients cycle through.
const payloadPool = 64

// newPayloadPool fills the shared pool of size-byte bodies.
func newPayloadPool(seed int64, size int) [][]byte {
	rng := rand.New(rand.NewSource(seed * 1_000_003))
	pool := make([][]byte, payloadPool)
	for i := range pool {
		pool[i] = make([]byte, size)
		rng.Read(pool[i])
	}
	return pool
}

func newPayloads(pool [][]byte, client int) *payloads {
	return &payloads{client: uint32(client), pool: pool}
}

// next returns a fresh slice (raft keeps the command) for sequence number seq.
func (p *payloads) next(seq uint64) []byte {
	cmd := append([]byte(nil), p.pool[(seq+uint64(p.client))%payloadPool]...)
	var stamp [12]byte
	binary.BigEndian.PutUint32(stamp[:4], p.client)
	binary.BigEndian.PutUint64(stamp[4:], seq)
	copy(cmd, stamp[:]) // commands shorter than the stamp keep a prefix of it
	return cmd
}

// percentile returns the q-quantile (0..1) of sorted by the nearest-rank method, or 0 for
// no samples.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
