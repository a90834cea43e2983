package tcp

import (
	"bytes"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/raftkit/raft"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(entries)
}

// TestTransport_CloseLeaksNothing exercises every kind of connection and goroutine the
// transport has, including stuck ones, closes the transports, and checks that goroutines and
// file descriptors return to where they were.
func TestTransport_CloseLeaksNothing(t *testing.T) {
	fdsBefore, goroutinesBefore := openFDs(t), runtime.NumGoroutine()
	t.Run("exercise", func(t *testing.T) {
		server, _ := newTestTransport(t, Options{})
		client, _ := newTestTransport(t, Options{Timeout: time.Minute})
		startNode(t, server, func(rpc raft.RPC) {
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && req.Term == 99 {
				return // never answered: its handler and caller are stuck until Close
			}
			if rpc.Reader != nil {
				rpc.Reader.Read(make([]byte, 10)) // reads a little, leaves the rest
			}
			echo(rpc)
		})
		mustAppend(t, client, server, appendReq(1, 0, 5, 100))
		mustAppend(t, client, server, appendReq(1, 0, 0, 0))
		var snapResp raft.InstallSnapshotResponse
		if err := client.InstallSnapshot("s", server.LocalAddr(), &raft.InstallSnapshotRequest{Size: 5000}, &snapResp, bytes.NewReader(make([]byte, 5000))); err != nil {
			t.Fatal(err)
		}
		p, err := client.AppendEntriesPipeline("s", server.LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		pipeSend(t, p, 0, 3) // left open: Close must stop it
		stuck := goCall(func() error {
			var resp raft.AppendEntriesResponse
			return client.AppendEntries("s", server.LocalAddr(), appendReq(99, 0, 1, 8), &resp)
		})
		rawDial(t, server) // an inbound connection that never sends a frame
		waitFor(t, "every connection to be open", func() bool { return inboundCount(server) == 4 })
		client.Close()
		server.Close()
		await(t, stuck, 2*time.Second)
	})
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= goroutinesBefore })
	waitFor(t, "file descriptors to close", func() bool { return openFDs(t) <= fdsBefore })
}
