package raftest_test

import (
	"errors"
	"fmt"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// The crash model around a store of your own, outside a Cluster: the inner store plays the
// disk, each run of the node gets a new Incarnation over it, and a crash inside StoreLogs keeps
// a prefix of the batch.
func ExampleIncarnation() {
	disk := raft.NewInmemStore() // your LogStore here
	first := raftest.NewIncarnation(42, nil)
	logs := first.LogStore(disk)
	_ = logs.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("a")}})

	first.CrashAt(raftest.CrashInStoreLogs, 0) // crash inside the next StoreLogs
	var batch []*raft.Log
	for i := uint64(2); i <= 5; i++ {
		batch = append(batch, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("b")})
	}
	err := logs.StoreLogs(batch)
	fmt.Println(errors.Is(err, raftest.ErrCrashed), first.Crashed())

	// The next run of the node sees what the disk kept: the acknowledged entry and a prefix
	// of the interrupted batch. The old incarnation can touch nothing any more.
	second := raftest.NewIncarnation(43, nil)
	last, _ := second.LogStore(disk).LastIndex()
	fmt.Println(last >= 1 && last <= 5)
	_, err = logs.LastIndex()
	fmt.Println(errors.Is(err, raftest.ErrCrashed))
	// Output:
	// true true
	// true
	// true
}
