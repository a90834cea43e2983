// Package storetest is a conformance suite and a set of benchmarks for implementations of
// raft.LogStore and raft.StableStore. raft.InmemStore and wal.Store run it; a third-party
// store should too, since the Raft core relies on every behaviour it checks: consecutive
// appends starting anywhere on an empty log, ErrLogNotFound outside the bounds, prefix and
// suffix deletion, storing after the whole log was deleted, rejection of out-of-order
// batches without damage, ownership of the slices passed in and handed out, and safe
// concurrent reads during appends and compaction.
//
// Each function runs its cases as subtests named after the case, so `go test -run` can pick
// one. A store that knowingly lacks one behaviour can skip that case with SkipCase, which
// prints the reason in the test output.
//
// Use from a third-party store's tests:
//
//	package mystore_test
//
//	import (
//		"testing"
//
//		"github.com/raftkit/raft"
//		"github.com/raftkit/raft/storetest"
//		"example.com/mystore"
//	)
//
//	func open(t testing.TB, dir string) *mystore.Store {
//		s, err := mystore.Open(dir)
//		if err != nil {
//			t.Fatal(err)
//		}
//		return s
//	}
//
//	func TestConformance(t *testing.T) {
//		storetest.TestLogStore(t, func(t *testing.T) raft.LogStore {
//			s := open(t, t.TempDir())
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//		storetest.TestStableStore(t, func(t *testing.T) raft.StableStore {
//			s := open(t, t.TempDir())
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//		// For durable stores: every operation survives Close and reopen. The store must
//		// implement io.Closer; the suite closes it before reopening.
//		storetest.TestLogStoreReopen(t, func(t *testing.T, dir string) raft.LogStore { return open(t, dir) })
//	}
//
//	func BenchmarkStoreLogs64x128(b *testing.B) {
//		storetest.BenchmarkStoreLogs(b, func(b *testing.B) raft.LogStore {
//			s := open(b, b.TempDir())
//			b.Cleanup(func() { s.Close() })
//			return s
//		}, 64, 128)
//	}
//
// Factories must return a new, empty store on every call, and register its cleanup.
package storetest
