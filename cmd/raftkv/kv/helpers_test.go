package kv

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

// fastRaft returns timeouts that elect a leader on loopback in well under a second, yet leave
// the leader's lease long enough that a CI machine loaded by the race detector and parallel
// packages does not depose it in the middle of a test.
func fastRaft() *raft.Config {
	c := raft.DefaultConfig()
	c.HeartbeatTimeout = 250 * time.Millisecond
	c.ElectionTimeout = 250 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	return c
}

// testLogger keeps node logs out of the test output unless the test fails.
func testLogger(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: testWriter{t}})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startTestNode starts a node with fast timeouts, no fsync and loopback ports, and closes it
// at cleanup.
func startTestNode(t *testing.T, conf NodeConfig) *Node {
	t.Helper()
	if conf.HTTPAddr == "" {
		conf.HTTPAddr = "127.0.0.1:0"
	}
	if conf.RaftAddr == "" {
		conf.RaftAddr = "127.0.0.1:0"
	}
	if conf.DataDir == "" {
		conf.DataDir = t.TempDir()
	}
	if conf.Raft == nil {
		conf.Raft = fastRaft()
	}
	if conf.Logger == nil {
		conf.Logger = testLogger(t, string(conf.ID))
	}
	conf.NoSync = true
	n, err := StartNode(conf)
	if err != nil {
		t.Fatalf("StartNode %s: %v", conf.ID, err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("closing node %s: %v", conf.ID, err)
		}
	})
	return n
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// waitRegistered waits until every node knows a leader and every member's HTTP address.
func waitRegistered(t *testing.T, nodes ...*Node) {
	t.Helper()
	waitFor(t, 10*time.Second, "a leader and every registration", func() bool {
		for _, n := range nodes {
			if _, id := n.Raft().LeaderWithID(); id == "" || n.FSM().Members() != len(nodes) {
				return false
			}
		}
		return true
	})
}

// response is what a test request got back.
type response struct {
	status int
	body   string
	header http.Header
}

// jsonError decodes the {"error": ...} body; it fails the test for any other shape.
func (r response) jsonError(t *testing.T) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error", r.body)
	}
	return e.Error
}

var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// do sends one request to the node and reads the whole answer.
func do(t *testing.T, n *Node, method, path, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func wantStatus(t *testing.T, r response, status int, what string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d (%s), want %d", what, r.status, strings.TrimSpace(r.body), status)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
