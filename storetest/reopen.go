package storetest

import (
	"io"
	"math"
	"testing"

	"github.com/raftkit/raft"
)

// TestLogStoreReopen checks that a durable LogStore keeps the effect of every operation
// across Close and reopen: appends, prefix and suffix deletion, appends after a suffix
// deletion, and storing at a new index after deleting the whole log. open must open (or
// create) the store in dir; the store must implement io.Closer, and the suite closes every
// store it opens.
func TestLogStoreReopen(t *testing.T, open func(t *testing.T, dir string) raft.LogStore) {
	dir := t.TempDir()
	s := open(t, dir)
	t.Cleanup(func() {
		if s != nil {
			closeStore(t, s)
		}
	})
	var model []*raft.Log
	step := func(what string, op func()) {
		t.Helper()
		op()
		CheckLogs(t, s, model)
		closeStore(t, s)
		s = nil
		s = open(t, dir)
		t.Logf("reopened after %s", what)
		CheckLogs(t, s, model)
	}
	step("nothing", func() {})
	step("appends", func() {
		for i := 0; i < 10; i++ {
			batch := MakeLogs(uint64(len(model)+1), 30, 1, 200)
			mustStore(t, s, batch)
			model = append(model, batch...)
		}
	})
	step("prefix deletion", func() { mustDelete(t, s, 1, 75); model = model[75:] })
	step("suffix deletion", func() { mustDelete(t, s, 251, 300); model = model[:len(model)-50] })
	step("append after suffix deletion", func() {
		batch := MakeLogs(251, 20, 2, 100)
		mustStore(t, s, batch)
		model = append(model, batch...)
	})
	step("deleting everything", func() { mustDelete(t, s, 76, math.MaxUint64); model = nil })
	step("store at a higher index", func() { model = MakeLogs(1000, 5, 3, 10); mustStore(t, s, model) })
	step("store at a lower index", func() {
		mustDelete(t, s, 1000, 1004)
		model = MakeLogs(10, 5, 4, 10)
		mustStore(t, s, model)
	})
}

// TestStableStoreReopen checks that a durable StableStore keeps every value across Close and
// reopen. open must open (or create) the store in dir; the store must implement io.Closer.
func TestStableStoreReopen(t *testing.T, open func(t *testing.T, dir string) raft.StableStore) {
	dir := t.TempDir()
	s := open(t, dir)
	mustSetUint64(t, s, []byte("CurrentTerm"), 5)
	mustSet(t, s, []byte("LastVote"), []byte("term 5 node-b"))
	closeStore(t, s)
	s = open(t, dir)
	mustGetUint64(t, s, []byte("CurrentTerm"), 5)
	mustGet(t, s, []byte("LastVote"), []byte("term 5 node-b"))
	mustSetUint64(t, s, []byte("CurrentTerm"), 6)
	closeStore(t, s)
	s = open(t, dir)
	defer closeStore(t, s)
	mustGetUint64(t, s, []byte("CurrentTerm"), 6)
	mustGet(t, s, []byte("LastVote"), []byte("term 5 node-b"))
	mustGet(t, s, []byte("missing"), nil)
}

// closeStore closes s, which must implement io.Closer.
func closeStore(t testing.TB, s any) {
	t.Helper()
	c, ok := s.(io.Closer)
	if !ok {
		t.Fatalf("%T does not implement io.Closer; reopen tests need it", s)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
