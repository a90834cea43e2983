package storetest

import (
	"bytes"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/raftkit/raft"
)

// TestStableStore runs the StableStore conformance cases. newStore must return a new, empty
// store each time it is called and register its cleanup with t.Cleanup.
func TestStableStore(t *testing.T, newStore func(t *testing.T) raft.StableStore, opts ...Option) {
	runCases(t, newConfig(opts), newStore, []namedCase[raft.StableStore]{
		{"MissingKey", caseMissingKey},
		{"SetGetRoundTrip", caseSetGet},
		{"Uint64RoundTrip", caseUint64},
		{"KeepsNoReferenceToInput", caseStableInputOwnership},
		{"GetReturnsCallerOwnedCopy", caseStableOutputOwnership},
		{"ConcurrentSetAndGet", caseStableConcurrent},
	})
}

// mustGet fails the test unless key holds want (nil for a missing key).
func mustGet(t testing.TB, s raft.StableStore, key, want []byte) {
	t.Helper()
	got, err := s.Get(key)
	if err != nil || !bytes.Equal(got, want) || (want == nil) != (got == nil) {
		t.Fatalf("Get(%q) = %q, %v; want %q", key, got, err, want)
	}
}

// mustGetUint64 fails the test unless key holds want.
func mustGetUint64(t testing.TB, s raft.StableStore, key []byte, want uint64) {
	t.Helper()
	got, err := s.GetUint64(key)
	if err != nil || got != want {
		t.Fatalf("GetUint64(%q) = %d, %v; want %d", key, got, err, want)
	}
}

// mustSet sets key to val or fails the test.
func mustSet(t testing.TB, s raft.StableStore, key, val []byte) {
	t.Helper()
	if err := s.Set(key, val); err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
}

// mustSetUint64 sets key to val or fails the test.
func mustSetUint64(t testing.TB, s raft.StableStore, key []byte, val uint64) {
	t.Helper()
	if err := s.SetUint64(key, val); err != nil {
		t.Fatalf("SetUint64(%q): %v", key, err)
	}
}

func caseMissingKey(t *testing.T, s raft.StableStore) {
	mustGet(t, s, []byte("missing"), nil)
	mustGetUint64(t, s, []byte("missing-uint"), 0)
}

func caseSetGet(t *testing.T, s raft.StableStore) {
	keys := [][]byte{[]byte("LastVote"), {0, 1, 2, 0xFF}, []byte("k")}
	for i, k := range keys {
		mustSet(t, s, k, fill(uint64(i+1), 10*(i+1)))
	}
	for i, k := range keys {
		mustGet(t, s, k, fill(uint64(i+1), 10*(i+1)))
	}
	mustSet(t, s, keys[0], []byte("overwritten"))
	mustGet(t, s, keys[0], []byte("overwritten"))
	mustGet(t, s, keys[1], fill(2, 20))
	mustSet(t, s, []byte("large"), fill(7, 64<<10))
	mustGet(t, s, []byte("large"), fill(7, 64<<10))
}

func caseUint64(t *testing.T, s raft.StableStore) {
	for _, v := range []uint64{1, 0, 42, math.MaxUint64} {
		mustSetUint64(t, s, []byte("CurrentTerm"), v)
		mustGetUint64(t, s, []byte("CurrentTerm"), v)
	}
	mustSetUint64(t, s, []byte("other"), 7)
	mustGetUint64(t, s, []byte("CurrentTerm"), math.MaxUint64)
	mustGetUint64(t, s, []byte("other"), 7)
}

func caseStableInputOwnership(t *testing.T, s raft.StableStore) {
	key, val := []byte("key"), []byte("value")
	mustSet(t, s, key, val)
	copy(val, "XXXXX")
	mustGet(t, s, []byte("key"), []byte("value"))
	copy(key, "kex")
	mustGet(t, s, []byte("key"), []byte("value"))
}

func caseStableOutputOwnership(t *testing.T, s raft.StableStore) {
	mustSet(t, s, []byte("key"), []byte("value"))
	got, err := s.Get([]byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	copy(got, "XXXXX")
	mustGet(t, s, []byte("key"), []byte("value"))
}

// caseStableConcurrent has writers set their own keys while others read; the race detector
// and the final values check the store.
func caseStableConcurrent(t *testing.T, s raft.StableStore) {
	const writers, rounds = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers) // one slot per writer, so no send ever blocks
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) { // owned by this case; exits after its rounds or on the first error
			defer wg.Done()
			key := []byte(fmt.Sprintf("writer-%d", w))
			for r := 1; r <= rounds; r++ {
				if err := s.SetUint64(key, uint64(r)); err != nil {
					errs <- err
					return
				}
				if got, err := s.GetUint64(key); err != nil || got != uint64(r) {
					errs <- fmt.Errorf("GetUint64(%s) = %d, %v; want %d", key, got, err, r)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := 0; w < writers; w++ {
		mustGetUint64(t, s, []byte(fmt.Sprintf("writer-%d", w)), rounds)
	}
}
