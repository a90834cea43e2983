package raft_test

import (
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

func TestInmemStore_LogStoreConformance(t *testing.T) {
	storetest.TestLogStore(t, func(*testing.T) raft.LogStore { return raft.NewInmemStore() })
}

func TestInmemStore_StableStoreConformance(t *testing.T) {
	storetest.TestStableStore(t, func(*testing.T) raft.StableStore { return raft.NewInmemStore() })
}

func BenchmarkInmemStore(b *testing.B) {
	storetest.BenchmarkLogStore(b, func(*testing.B) raft.LogStore { return raft.NewInmemStore() })
}
