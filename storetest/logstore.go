package storetest

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/raftkit/raft"
)

// TestLogStore runs the LogStore conformance cases. newStore must return a new, empty store
// each time it is called and register its cleanup with t.Cleanup.
func TestLogStore(t *testing.T, newStore func(t *testing.T) raft.LogStore, opts ...Option) {
	runCases(t, newConfig(opts), newStore, []namedCase[raft.LogStore]{
		{"EmptyStore", caseEmptyStore},
		{"StoreAndGetRoundTrip", caseRoundTrip},
		{"StoreLogSingle", caseStoreLogSingle},
		{"FirstBatchAtAnyIndex", caseFirstBatchAtAnyIndex},
		{"RejectsOutOfOrderBatch", caseRejectsOutOfOrder},
		{"DeletePrefix", caseDeletePrefix},
		{"DeleteSuffixThenAppend", caseDeleteSuffix},
		{"DeleteAllThenStoreAtAnyIndex", caseDeleteAll},
		{"DeleteIgnoresRangeOutsideLog", caseDeleteOutside},
		{"KeepsNoReferenceToInput", caseInputOwnership},
		{"GetLogReturnsCallerOwnedCopy", caseOutputOwnership},
		{"ConcurrentReadsDuringAppendAndCompaction", caseConcurrentReads},
	})
}

func caseEmptyStore(t *testing.T, s raft.LogStore) {
	CheckLogs(t, s, nil)
	checkNotFound(t, s, 0)
	checkNotFound(t, s, 1)
	mustDelete(t, s, 1, 10) // deleting from an empty log is a no-op, not an error
	CheckLogs(t, s, nil)
}

func caseRoundTrip(t *testing.T, s raft.LogStore) {
	var model []*raft.Log
	for i, n := range []int{1, 2, 64, 7} {
		batch := MakeLogs(uint64(len(model)+1), n, uint64(i+1), 100*i)
		mustStore(t, s, batch)
		model = append(model, batch...)
	}
	big := MakeLog(uint64(len(model)+1), 9, 1<<20) // one entry of 1 MiB
	mustStore(t, s, []*raft.Log{big})
	model = append(model, big)
	CheckLogs(t, s, model)
}

func caseStoreLogSingle(t *testing.T, s raft.LogStore) {
	var model []*raft.Log
	for i := uint64(1); i <= 20; i++ {
		l := MakeLog(i, 1, int(i))
		if err := s.StoreLog(l); err != nil {
			t.Fatalf("StoreLog(%d): %v", i, err)
		}
		model = append(model, l)
	}
	CheckLogs(t, s, model)
}

func caseFirstBatchAtAnyIndex(t *testing.T, s raft.LogStore) {
	model := MakeLogs(1000, 10, 3, 16)
	mustStore(t, s, model)
	CheckLogs(t, s, model)
	checkNotFound(t, s, 1)
}

func caseRejectsOutOfOrder(t *testing.T, s raft.LogStore) {
	model := MakeLogs(1, 10, 1, 32)
	mustStore(t, s, model)
	bad := map[string][]*raft.Log{
		"gap after the last index":   MakeLogs(12, 3, 1, 32),
		"overwrite of the last":      MakeLogs(10, 3, 2, 32),
		"rewrite of an older index":  MakeLogs(5, 1, 2, 32),
		"non-consecutive in a batch": {MakeLog(11, 1, 8), MakeLog(13, 1, 8)},
		"reordered in a batch":       {MakeLog(12, 1, 8), MakeLog(11, 1, 8)},
	}
	for what, batch := range bad {
		if err := s.StoreLogs(batch); err == nil {
			t.Fatalf("StoreLogs with a %s succeeded, want an error", what)
		}
		CheckLogs(t, s, model)
	}
	next := MakeLogs(11, 2, 1, 32) // a good batch still goes through afterwards
	mustStore(t, s, next)
	CheckLogs(t, s, append(model, next...))
}

func caseDeletePrefix(t *testing.T, s raft.LogStore) {
	model := MakeLogs(1, 300, 1, 64)
	for i := 0; i < len(model); i += 50 {
		mustStore(t, s, model[i:i+50])
	}
	mustDelete(t, s, 1, 120)
	CheckLogs(t, s, model[120:])
	mustDelete(t, s, 121, 121)
	CheckLogs(t, s, model[121:])
	next := MakeLogs(301, 5, 2, 64)
	mustStore(t, s, next)
	CheckLogs(t, s, append(model[121:], next...))
}

func caseDeleteSuffix(t *testing.T, s raft.LogStore) {
	model := MakeLogs(1, 200, 1, 64)
	mustStore(t, s, model[:100])
	mustStore(t, s, model[100:])
	mustDelete(t, s, 151, 200)
	CheckLogs(t, s, model[:150])
	// Conflict truncation: the new leader's entries replace the deleted suffix.
	repl := MakeLogs(151, 30, 2, 80)
	mustStore(t, s, repl)
	model = append(model[:150], repl...)
	CheckLogs(t, s, model)
	mustDelete(t, s, 2, 180) // everything but the first entry
	CheckLogs(t, s, model[:1])
}

func caseDeleteAll(t *testing.T, s raft.LogStore) {
	mustStore(t, s, MakeLogs(1, 100, 1, 32))
	mustDelete(t, s, 1, 100)
	CheckLogs(t, s, nil)
	high := MakeLogs(500, 10, 2, 32) // after a snapshot install: start past the old log
	mustStore(t, s, high)
	CheckLogs(t, s, high)
	mustDelete(t, s, 500, 509)
	low := MakeLogs(50, 10, 3, 32) // and below where the previous log started
	mustStore(t, s, low)
	CheckLogs(t, s, low)
}

// caseDeleteOutside deletes ranges that reach past the log, as a compaction does when it read
// the first index before the log was compacted further or replaced.
func caseDeleteOutside(t *testing.T, s raft.LogStore) {
	model := MakeLogs(100, 100, 1, 32)
	mustStore(t, s, model)
	mustDelete(t, s, 50, 120) // a prefix starting below the first index
	CheckLogs(t, s, model[21:])
	mustDelete(t, s, 1, 99) // wholly below the log
	CheckLogs(t, s, model[21:])
	mustDelete(t, s, 300, 400) // wholly above it
	CheckLogs(t, s, model[21:])
	mustDelete(t, s, 60, 300) // the whole log, from below to above
	CheckLogs(t, s, nil)
	next := MakeLogs(500, 10, 2, 32) // a replaced log, then a stale compaction below it
	mustStore(t, s, next)
	mustDelete(t, s, 50, 499)
	CheckLogs(t, s, next)
}

func caseInputOwnership(t *testing.T, s raft.LogStore) {
	batch := MakeLogs(1, 8, 1, 32)
	want := MakeLogs(1, 8, 1, 32)
	mustStore(t, s, batch)
	for _, l := range batch { // the caller reuses its buffers and structs
		for i := range l.Data {
			l.Data[i] ^= 0xFF
		}
		for i := range l.Extensions {
			l.Extensions[i] ^= 0xFF
		}
		l.Term = 99
	}
	CheckLogs(t, s, want)
}

func caseOutputOwnership(t *testing.T, s raft.LogStore) {
	want := MakeLogs(1, 8, 1, 32)
	mustStore(t, s, MakeLogs(1, 8, 1, 32))
	for _, w := range want {
		var got raft.Log
		if err := s.GetLog(w.Index, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", w.Index, err)
		}
		for i := range got.Data {
			got.Data[i] ^= 0xFF
		}
		for i := range got.Extensions {
			got.Extensions[i] ^= 0xFF
		}
	}
	CheckLogs(t, s, want)
}

// caseConcurrentReads runs readers against a writer that appends and compacts. Each index
// only ever holds one entry, so every successful read must return exactly it, and every
// failed one must be ErrLogNotFound for an index that was compacted away.
func caseConcurrentReads(t *testing.T, s raft.LogStore) {
	const total, readers, seed = 3000, 4, 42
	var wg sync.WaitGroup
	done := make(chan struct{})         // closed by the writer when it is finished
	errs := make(chan error, readers+1) // one slot per sender, so no send ever blocks
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) { // owned by this case; exits when done is closed or on the first error
			defer wg.Done()
			errs <- readUntilDone(s, rand.New(rand.NewPCG(seed, uint64(r))), done)
		}(r)
	}
	errs <- writeAndCompact(s, rand.New(rand.NewPCG(seed, 99)), total)
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

// writeAndCompact appends total entries in random batches, compacting the head as it goes.
func writeAndCompact(s raft.LogStore, rng *rand.Rand, total uint64) error {
	next := uint64(1)
	for next <= total {
		n := min(1+rng.Uint64N(32), total-next+1)
		if err := s.StoreLogs(MakeLogs(next, int(n), 1, 48)); err != nil {
			return err
		}
		next += n
		if rng.IntN(8) == 0 && next > 200 {
			first, err := s.FirstIndex()
			if err != nil {
				return err
			}
			if err := s.DeleteRange(first, next-150); err != nil {
				return err
			}
		}
	}
	return nil
}

// readUntilDone reads random indexes inside the current bounds until done is closed.
func readUntilDone(s raft.LogStore, rng *rand.Rand, done <-chan struct{}) error {
	for {
		select {
		case <-done:
			return nil
		default:
		}
		first, err1 := s.FirstIndex()
		last, err2 := s.LastIndex()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if last == 0 {
			continue
		}
		idx := first + rng.Uint64N(last-first+1)
		var got raft.Log
		err := s.GetLog(idx, &got)
		if err == nil && !EqualLog(&got, MakeLog(idx, 1, 48)) {
			return errors.New("concurrent GetLog returned a wrong entry")
		}
		if err != nil && !errors.Is(err, raft.ErrLogNotFound) {
			return err
		}
		if err != nil {
			if now, _ := s.FirstIndex(); idx >= now {
				return errors.New("GetLog reported ErrLogNotFound for an index still in the log")
			}
		}
	}
}
