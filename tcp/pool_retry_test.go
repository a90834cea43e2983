package tcp

import (
	"sync"
	"testing"

	"github.com/raftkit/raft"
)

// Issue 16, item 6: after a peer restarted on the same address, every idle pooled connection
// failed one call (up to the pool size) before a fresh one was dialled. A call on a pooled
// connection the peer closed must now be retried once on a new connection.
func TestTransport_DeadPooledConnectionsAreRetriedAfterPeerRestart(t *testing.T) {
	server, _ := newTestTransport(t, Options{})
	addr := server.LocalAddr()
	client, _ := newTestTransport(t, Options{MaxPool: 4})
	startNode(t, server, nil)
	// Fill the pool with several idle connections.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp raft.RequestVoteResponse
			if err := client.RequestVote("s", addr, &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: "c", Addr: "127.0.0.1:1"}, Term: 1}, &resp); err != nil {
				t.Errorf("RequestVote: %v", err)
			}
		}()
	}
	wg.Wait()
	client.mu.Lock()
	pooled := len(client.idle[poolKey{target: addr}])
	client.mu.Unlock()
	if pooled < 2 {
		t.Fatalf("%d idle connections pooled; the test needs several", pooled)
	}

	// The peer restarts on the same address: its old connections are gone.
	server.Close()
	restarted, err := NewTransport(string(addr), nil, Options{})
	if err != nil {
		t.Fatalf("restarting on %s: %v", addr, err)
	}
	t.Cleanup(func() { restarted.Close() })
	startNode(t, restarted, nil)
	// Every pooled connection is now dead: each call must still succeed.
	for i := 0; i < pooled+2; i++ {
		var resp raft.RequestVoteResponse
		if err := client.RequestVote("s", addr, &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: "c", Addr: "127.0.0.1:1"}, Term: 2}, &resp); err != nil {
			t.Fatalf("call %d after the peer restarted: %v", i, err)
		}
		if resp.Term != 2 {
			t.Fatalf("call %d: response %+v, want the echo of term 2", i, resp)
		}
	}
}
