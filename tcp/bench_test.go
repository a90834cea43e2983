package tcp

import (
	"bufio"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

// benchCases are the AppendEntries shapes measured: entries per request times entry size.
var benchCases = []struct{ entries, size int }{
	{1, 128}, {64, 128}, {512, 128}, {1, 4096}, {64, 4096}, {512, 4096},
}

func benchName(entries, size int) string {
	return fmt.Sprintf("entries=%d/size=%dB", entries, size)
}

// benchPair returns a client and a server answered by an echo node, over loopback.
func benchPair(b *testing.B) (client, server *Transport) {
	quiet := Options{Logger: hclog.NewNullLogger()}
	server, _ = newTestTransport(b, quiet)
	client, _ = newTestTransport(b, quiet)
	startNode(b, server, nil)
	return client, server
}

// BenchmarkAppendEntries measures synchronous AppendEntries round trips over loopback; MB/s
// counts entry payload, rt/s round trips per second. Allocations include both sides.
func BenchmarkAppendEntries(b *testing.B) {
	for _, c := range benchCases {
		b.Run(benchName(c.entries, c.size), func(b *testing.B) {
			client, server := benchPair(b)
			req := appendReq(1, 0, c.entries, c.size)
			var resp raft.AppendEntriesResponse
			b.SetBytes(int64(c.entries * c.size))
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				if err := client.AppendEntries("s", server.LocalAddr(), req, &resp); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rt/s")
		})
	}
}

// BenchmarkAppendEntriesPipeline measures the same requests through a pipeline.
func BenchmarkAppendEntriesPipeline(b *testing.B) {
	for _, c := range benchCases {
		b.Run(benchName(c.entries, c.size), func(b *testing.B) {
			client, server := benchPair(b)
			p, err := client.AppendEntriesPipeline("s", server.LocalAddr())
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			req := appendReq(1, 0, c.entries, c.size)
			drained := goCall(func() error { return drainPipeline(p, b.N) })
			b.SetBytes(int64(c.entries * c.size))
			b.ReportAllocs()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
					b.Fatal(err)
				}
			}
			if r := <-drained; r.err != nil {
				b.Fatal(r.err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rt/s")
		})
	}
}

// drainPipeline waits for n completed futures.
func drainPipeline(p raft.AppendPipeline, n int) error {
	for i := 0; i < n; i++ {
		if err := (<-p.Consumer()).Error(); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkEncodeAppendEntries measures the frame encoder alone: allocs/op must be 0 for
// every entry count.
func BenchmarkEncodeAppendEntries(b *testing.B) {
	for _, c := range benchCases {
		b.Run(benchName(c.entries, c.size), func(b *testing.B) {
			fw := newFrameWriter(newMsgpackHandle(), DefaultMaxFrameBytes)
			bw := bufio.NewWriter(io.Discard)
			req := appendReq(1, 0, c.entries, c.size)
			b.SetBytes(int64(c.entries * c.size))
			b.ReportAllocs()
			for b.Loop() {
				if err := fw.writeFrame(bw, frameAppendEntries, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
