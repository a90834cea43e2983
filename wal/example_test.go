package wal_test

import (
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/wal"
)

// ExampleOpen uses the store on its own: raft.NewRaft takes it as both the LogStore and the
// StableStore. The directory is locked while a Store holds it, so close it (after
// raft.Shutdown) before opening it again.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "wal-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := wal.Open(dir) // fsync on every batch; wal.WithNoSync() only for throwaway data
	if err != nil {
		log.Fatal(err)
	}
	// One batch, one fsync.
	err = store.StoreLogs([]*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x=1")},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("x=2")},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		log.Fatal(err)
	}
	if _, err := wal.Open(dir); errors.Is(err, wal.ErrLocked) {
		fmt.Println("second open while the first is in use: wal.ErrLocked")
	}
	if err := store.Close(); err != nil {
		log.Fatal(err)
	}

	// Reopening verifies every record and cuts a torn tail left by a crash.
	store, err = wal.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	report := store.OpenReport()
	fmt.Printf("log %d..%d, tail cut: %v\n", report.FirstIndex, report.LastIndex, report.TailCut)
	var entry raft.Log
	if err := store.GetLog(2, &entry); err != nil {
		log.Fatal(err)
	}
	term, err := store.GetUint64([]byte("CurrentTerm"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("entry 2: %s, term %d\n", entry.Data, term)
	// Output:
	// second open while the first is in use: wal.ErrLocked
	// log 1..2, tail cut: false
	// entry 2: x=2, term 1
}
