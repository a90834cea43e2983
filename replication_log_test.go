package raft

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// logReplicator is a replicator with only what its logging needs.
func logReplicator(buf *bytes.Buffer) *replicator {
	r := &Raft{logger: hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Debug})}
	s := &replicator{r: r}
	s.peer.Store(&Server{ID: "p"})
	return s
}

func countLines(buf *bytes.Buffer, level, msg string) int {
	n := 0
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, level) && strings.Contains(l, msg) {
			n++
		}
	}
	return n
}

func TestReplicator_SnapshotSendFailuresAreRateLimited(t *testing.T) {
	var buf bytes.Buffer
	s := logReplicator(&buf)
	boom := errors.New("i/o timeout")
	start := time.Unix(1000, 0)
	// A retry every 500ms for two minutes: one WARN per snapshotWarnInterval.
	for at := time.Duration(0); at < 2*time.Minute; at += 500 * time.Millisecond {
		s.failures++
		s.logSnapshotFailure("p", 7, boom, start.Add(at))
	}
	want := int(2 * time.Minute / snapshotWarnInterval)
	if n := countLines(&buf, "[WARN]", "sending snapshot failed"); n != want {
		t.Fatalf("%d WARN lines over two minutes of failures, want %d", n, want)
	}
}
