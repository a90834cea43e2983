package kv

import (
	"net"
	"testing"
	"time"

	"github.com/raftkit/raft"
)

// TestProbeLayer_AnswersProbesAndClosesPromptly: a probe gets the answer, a silent connection
// does not hold Close for the sniff timeout, and other traffic reaches Accept unchanged.
func TestProbeLayer_AnswersProbesAndClosesPromptly(t *testing.T) {
	l, err := newProbeLayer("127.0.0.1:0", nil, func() ProbeAnswer { return ProbeAnswer{ID: "x", Registered: []string{"a"}} })
	if err != nil {
		t.Fatal(err)
	}
	a, err := Probe(l.Addr().String(), nil, 5*time.Second)
	if err != nil || a.ID != "x" || len(a.Registered) != 1 {
		t.Fatalf("probe: %+v, %v", a, err)
	}
	c, err := l.Dial(raft.ServerAddress(l.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	in, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := in.Read(buf); err != nil || buf[0] != 1 || buf[2] != 3 {
		t.Fatalf("passed-through bytes %v, %v", buf, err)
	}
	in.Close()
	c.Close()
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Let the sniffer take the silent connection before Close.
	waitFor(t, 5*time.Second, "the sniffer to hold the silent connection", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.sniffing) == 1
	})
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > probeSniffTimeout/2 {
		t.Fatalf("Close took %v with a silent connection open", took)
	}
	if _, err := l.Accept(); err == nil {
		t.Fatal("Accept after Close succeeded")
	}
}
