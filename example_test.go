package raft_test

import (
	"fmt"
	"log"
	"os"
	"time"

	"github.com/raftkit/raft"
)

// Example embeds one node with the README's code (example_embed_test.go): the counter FSM, a
// wal store, a file snapshot store and a TCP transport. It bootstraps a one-node cluster,
// applies two writes, reads linearizably, shuts down, and restarts from the same directory in
// the same process, which works because stop closes the wal store after Shutdown.
func Example() {
	dir, err := os.MkdirTemp("", "raftkit-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	n, err := start("n1", "127.0.0.1:0", dir, nil) // port 0: any free port
	if err != nil {
		log.Fatal(err)
	}
	waitForLeadership(n.raft)
	if _, err := n.add(2); err != nil {
		log.Fatal(err)
	}
	if _, err := n.add(3); err != nil {
		log.Fatal(err)
	}
	sum, err := n.sum()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sum:", sum)
	addr := string(n.raft.Leader()) // this node's own address, to come back at
	if err := n.stop(); err != nil {
		log.Fatal(err)
	}

	// The restart finds the log in the wal, skips the bootstrap and replays the two writes.
	n, err = start("n1", addr, dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	waitForLeadership(n.raft)
	sum, err = n.sum()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sum after restart:", sum)
	if err := n.stop(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// sum: 5
	// sum after restart: 5
}

// waitForLeadership waits until r leads, which a one-node cluster does after one election
// timeout.
func waitForLeadership(r *raft.Raft) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case leader := <-r.LeaderCh():
			if leader {
				return
			}
		case <-timeout:
			log.Fatal("no leadership within 30s")
		}
	}
}
