package wal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

// genLog is the entry at index in generation term; a truncated and rewritten index gets a
// higher term, so a reader can tell which generation it saw and check it exactly.
func genLog(index, term uint64) *raft.Log { return storetest.MakeLog(index, term, int(index%200)) }

// TestStore_ReadsRacingTailTruncationSeeOneGenerationOrNotFound has readers hammer GetLog
// while the writer appends, truncates the tail across segments, rewrites it with a new term
// and compacts the head. With the cache off every read goes to disk, racing truncate and
// rewrite of the very bytes it reads. A read must return an exact entry of some generation or
// ErrLogNotFound, never a spurious ErrCorrupt.
func TestStore_ReadsRacingTailTruncationSeeOneGenerationOrNotFound(t *testing.T) {
	seed := seedFor(t)
	s := testOpen(t, t.TempDir(), WithCacheEntries(0), WithSegmentSize(2<<10))
	defer mustClose(t, s)
	const readers = 3
	var wg sync.WaitGroup
	done := make(chan struct{})         // closed when the writer is finished
	errs := make(chan error, readers+1) // one slot per sender, so no send blocks
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) { // owned by this test; exits when done is closed or on an error
			defer wg.Done()
			errs <- readGenerations(s, rand.New(rand.NewPCG(seed, uint64(r))), done)
		}(r)
	}
	errs <- rewriteTail(s, rand.New(rand.NewPCG(seed, 100)))
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// rewriteTail appends, then repeatedly truncates a random suffix and rewrites it with a
// higher term, compacting the head now and then.
func rewriteTail(s *Store, rng *rand.Rand) error {
	last, term := uint64(0), uint64(1)
	for round := 0; round < 150; round++ {
		n := 1 + rng.Uint64N(20)
		batch := make([]*raft.Log, n)
		for i := range batch {
			batch[i] = genLog(last+1+uint64(i), term)
		}
		if err := s.StoreLogs(batch); err != nil {
			return err
		}
		last += n
		first, _ := s.FirstIndex()
		switch {
		case rng.IntN(3) == 0 && last-first > 10:
			from := last - rng.Uint64N(min(last-first-1, 40))
			if err := s.DeleteRange(from, last); err != nil {
				return err
			}
			last, term = from-1, term+1
		case rng.IntN(10) == 0 && last-first > 60:
			if err := s.DeleteRange(first, last-50); err != nil {
				return err
			}
		}
	}
	return nil
}

// readGenerations reads random indexes until done is closed.
func readGenerations(s *Store, rng *rand.Rand, done <-chan struct{}) error {
	for {
		select {
		case <-done:
			return nil
		default:
		}
		first, last, err := s.bounds()
		if err != nil || last == 0 {
			if err != nil {
				return err
			}
			continue
		}
		idx := first + rng.Uint64N(last-first+1)
		var got raft.Log
		err = s.GetLog(idx, &got)
		switch {
		case errors.Is(err, raft.ErrLogNotFound):
		case err != nil:
			return fmt.Errorf("GetLog(%d): %w", idx, err)
		case !storetest.EqualLog(&got, genLog(idx, got.Term)):
			return fmt.Errorf("GetLog(%d) returned an entry of no generation: %+v", idx, got)
		}
	}
}

func TestStore_GetLogRacingCloseReturnsEntryOrErrClosed(t *testing.T) {
	s := testOpen(t, t.TempDir(), WithCacheEntries(0))
	fillStore(t, s, 300)
	var wg sync.WaitGroup
	errs := make(chan error, 2) // one slot per reader, so no send blocks
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() { // owned by this test; exits once it sees ErrClosed or another error
			defer wg.Done()
			var l raft.Log
			for i := uint64(0); ; i++ {
				err := s.GetLog(1+i%300, &l)
				if errors.Is(err, ErrClosed) {
					errs <- nil
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	mustClose(t, s)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("GetLog racing Close: %v", err)
		}
	}
}

func TestStore_FailedWriteMakesStoreRefuseWrites(t *testing.T) {
	dir := t.TempDir()
	s := testOpen(t, dir)
	model := fillStore(t, s, 10)
	s.segs[len(s.segs)-1].f.Close() // make the next write to the active segment fail
	if err := s.StoreLogs(storetest.MakeLogs(11, 2, 1, 10)); err == nil {
		t.Fatal("StoreLogs to a closed segment file succeeded")
	}
	if err := s.StoreLogs(storetest.MakeLogs(11, 2, 1, 10)); !errors.Is(err, ErrFailed) {
		t.Fatalf("StoreLogs after a failed write = %v, want ErrFailed", err)
	}
	if err := s.DeleteRange(1, 2); !errors.Is(err, ErrFailed) {
		t.Fatalf("DeleteRange after a failed write = %v, want ErrFailed", err)
	}
	s.Close() // the active segment's file is already closed, so Close reports that; ignored
	s = testOpen(t, dir)
	defer mustClose(t, s)
	storetest.CheckLogs(t, s, model)
}
