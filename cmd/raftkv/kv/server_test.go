package kv

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/internal/testnet"
)

// singleNode starts a one-node cluster and waits until it leads and is registered.
func singleNode(t *testing.T, sc ServerConfig) *Node {
	t.Helper()
	n := startTestNode(t, NodeConfig{ID: "solo", Server: sc})
	waitRegistered(t, n)
	return n
}

func TestServer_SetGetDelete(t *testing.T) {
	n := singleNode(t, ServerConfig{})
	wantStatus(t, do(t, n, "GET", "/set?key=hello&value=world", ""), http.StatusOK, "classic set")
	if r := do(t, n, "GET", "/get?key=hello", ""); r.status != http.StatusOK || r.body != "world\n" {
		t.Fatalf("classic get: %d %q", r.status, r.body)
	}
	r := do(t, n, "PUT", "/kv/a/b%20c", "v1")
	wantStatus(t, r, http.StatusOK, "put")
	var wr writeResult
	if err := json.Unmarshal([]byte(r.body), &wr); err != nil || wr.Key != "a/b c" || wr.Index == 0 || wr.Existed {
		t.Fatalf("put answered %q (%v)", r.body, err)
	}
	for _, q := range []string{"", "?consistency=stale", "?consistency=linearizable", "?consistency=lease"} {
		if r := do(t, n, "GET", "/kv/a/b%20c"+q, ""); r.status != http.StatusOK || r.body != "v1" {
			t.Fatalf("get%s: %d %q", q, r.status, r.body)
		}
	}
	wantStatus(t, do(t, n, "DELETE", "/kv/a/b%20c", ""), http.StatusOK, "delete")
	r = do(t, n, "GET", "/kv/a/b%20c", "")
	wantStatus(t, r, http.StatusNotFound, "get after delete")
	if msg := r.jsonError(t); msg != "key not found" {
		t.Fatalf("get after delete: error %q", msg)
	}
}

func TestServer_MissingKeyIs400(t *testing.T) {
	n := singleNode(t, ServerConfig{})
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/get", ""}, {"GET", "/get?key=", ""}, {"GET", "/set?value=v", ""},
		{"GET", "/kv/", ""}, {"GET", "/kv", ""}, {"PUT", "/kv/", "v"}, {"DELETE", "/kv/", ""},
	} {
		r := do(t, n, c.method, c.path, c.body)
		wantStatus(t, r, http.StatusBadRequest, c.method+" "+c.path)
		if msg := r.jsonError(t); msg != "missing key" {
			t.Errorf("%s %s: error %q, want missing key", c.method, c.path, msg)
		}
	}
	r := do(t, n, "PUT", "/kv/"+strings.Repeat("k", DefaultMaxKeyBytes+1), "v")
	wantStatus(t, r, http.StatusBadRequest, "oversized key")
	r = do(t, n, "GET", "/kv/x?consistency=eventual", "")
	wantStatus(t, r, http.StatusBadRequest, "unknown consistency")
	r.jsonError(t)
}

func TestServer_ValueTooLargeIs413(t *testing.T) {
	n := singleNode(t, ServerConfig{MaxValueBytes: 100})
	wantStatus(t, do(t, n, "PUT", "/kv/k", strings.Repeat("v", 100)), http.StatusOK, "value at the limit")
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/kv/k", strings.Repeat("v", 101)},
		{"PUT", "/kv/k", strings.Repeat("v", 1<<20)},
		{"GET", "/set?key=k&value=" + strings.Repeat("v", 101), ""},
	} {
		r := do(t, n, c.method, c.path, c.body)
		wantStatus(t, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s of %d bytes", c.method, len(c.body)))
		r.jsonError(t)
	}
	if r := do(t, n, "GET", "/kv/k", ""); r.body != strings.Repeat("v", 100) {
		t.Fatalf("a refused value overwrote the stored one: %q", r.body)
	}
}

func TestServer_UnknownPathIs404AndWrongMethodIs405(t *testing.T) {
	n := singleNode(t, ServerConfig{})
	for _, p := range []string{"/ui/nope", "/nope", "/kvx", "/status/x", "/v1/kv/a"} {
		r := do(t, n, "GET", p, "")
		wantStatus(t, r, http.StatusNotFound, "GET "+p)
		if msg := r.jsonError(t); !strings.Contains(msg, "no such endpoint") {
			t.Errorf("GET %s: error %q", p, msg)
		}
	}
	for _, c := range []struct{ method, path string }{{"POST", "/kv/a"}, {"DELETE", "/status"}, {"GET", "/join"}, {"PUT", "/set"}} {
		r := do(t, n, c.method, c.path, "")
		wantStatus(t, r, http.StatusMethodNotAllowed, c.method+" "+c.path)
		r.jsonError(t)
	}
}

func TestServer_StatusDescribesTheNode(t *testing.T) {
	n := singleNode(t, ServerConfig{})
	wantStatus(t, do(t, n, "PUT", "/kv/x", "1"), http.StatusOK, "put")
	r := do(t, n, "GET", "/status", "")
	wantStatus(t, r, http.StatusOK, "status")
	var st Status
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatal(err)
	}
	if st.ID != "solo" || st.Role != "leader" || st.Term == 0 || st.Leader.ID != "solo" ||
		st.Leader.HTTPAddr != n.HTTPAddr() || st.Keys != 1 || st.CommitIndex == 0 || st.LastIndex < st.CommitIndex {
		t.Fatalf("status %+v", st)
	}
	if len(st.Configuration) != 1 || st.Configuration[0].HTTPAddr != n.HTTPAddr() || st.Configuration[0].Suffrage != "voter" {
		t.Fatalf("configuration %+v", st.Configuration)
	}
}

func TestServer_Metrics(t *testing.T) {
	off := singleNode(t, ServerConfig{})
	wantStatus(t, do(t, off, "GET", "/metrics", ""), http.StatusNotFound, "metrics disabled")
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "raft_test 1\n")
	})
	on := singleNode(t, ServerConfig{Metrics: handler})
	r := do(t, on, "GET", "/metrics", "")
	wantStatus(t, r, http.StatusOK, "metrics")
	if r.body != "raft_test 1\n" {
		t.Fatalf("metrics %q", r.body)
	}
}

func TestServer_NoQuorumIs503WithinTheTimeout(t *testing.T) {
	addrs := testnet.FreeLoopbackAddrs(t, 3) // the two peers never start
	cluster := []raft.Server{
		{ID: "a", Address: raft.ServerAddress(addrs[0])},
		{ID: "b", Address: raft.ServerAddress(addrs[1])},
		{ID: "c", Address: raft.ServerAddress(addrs[2])},
	}
	const timeout = 300 * time.Millisecond
	n := startTestNode(t, NodeConfig{ID: "a", RaftAddr: addrs[0], Cluster: cluster, Server: ServerConfig{RequestTimeout: timeout}})
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/kv/k", "v"}, {"GET", "/kv/k", ""}, {"GET", "/set?key=k&value=v", ""},
		{"GET", "/get?key=k", ""}, {"DELETE", "/kv/k", ""},
		{"POST", "/join", `{"id":"d","raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}`},
	} {
		start := time.Now()
		r := do(t, n, c.method, c.path, c.body)
		took := time.Since(start)
		wantStatus(t, r, http.StatusServiceUnavailable, c.method+" "+c.path)
		isWrite := c.method != "GET" || strings.HasPrefix(c.path, "/set")
		if msg := r.jsonError(t); !strings.Contains(msg, "no leader") || isWrite && !strings.Contains(msg, "not applied") {
			t.Errorf("%s %s: error %q does not say there is no leader (and, for a write, that nothing was applied)", c.method, c.path, msg)
		}
		if took < timeout || took > timeout+2*time.Second {
			t.Errorf("%s %s answered after %v, want about the request timeout %v", c.method, c.path, took, timeout)
		}
	}
	// A stale read needs no leader.
	r := do(t, n, "GET", "/kv/k?consistency=stale", "")
	wantStatus(t, r, http.StatusNotFound, "stale read")
}

func TestServer_JoinValidatesItsBody(t *testing.T) {
	n := singleNode(t, ServerConfig{})
	for _, body := range []string{"", "{", `{"id":"x"}`, `{"id":"x","raft_addr":"127.0.0.1:1"}`} {
		r := do(t, n, "POST", "/join", body)
		wantStatus(t, r, http.StatusBadRequest, "join "+body)
		r.jsonError(t)
	}
	r := do(t, n, "POST", "/join", `{"id":"solo","raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}`)
	wantStatus(t, r, http.StatusConflict, "join of a member under another address")
	r = do(t, n, "POST", "/leave", `{"id":"ghost"}`)
	wantStatus(t, r, http.StatusNotFound, "leave of a non-member")
	r.jsonError(t)
}

func TestServer_JoinAndLeave(t *testing.T) {
	first := singleNode(t, ServerConfig{})
	second := startTestNode(t, NodeConfig{ID: "second", Join: first.HTTPAddr()})
	waitFor(t, 10*time.Second, "the joined node to be a registered voter", func() bool {
		addr, ok := first.FSM().MemberHTTP("second")
		return ok && addr == second.HTTPAddr() && isVoter(first.Raft().GetConfiguration().Configuration(), "second") &&
			second.FSM().Members() == 2
	})
	// The new node forwards writes to the leader and reads them back linearizably.
	wantStatus(t, do(t, second, "PUT", "/kv/joined", "yes"), http.StatusOK, "put via the joined node")
	if r := do(t, second, "GET", "/kv/joined", ""); r.body != "yes" {
		t.Fatalf("read on the joined node: %d %q", r.status, r.body)
	}
	// Joining again is idempotent.
	body := fmt.Sprintf(`{"id":"second","raft_addr":%q,"http_addr":%q}`, second.raftAddr, second.HTTPAddr())
	wantStatus(t, do(t, second, "POST", "/join", body), http.StatusOK, "second join")
	// An empty /leave on a node removes that node, even when forwarded to the leader.
	wantStatus(t, do(t, second, "POST", "/leave", ""), http.StatusOK, "leave")
	if hasServer(first.Raft().GetConfiguration().Configuration(), "second") {
		t.Fatal("the node is still in the configuration after leaving")
	}
	wantStatus(t, do(t, first, "PUT", "/kv/alone", "again"), http.StatusOK, "put after the leave")
}

// A voter whose data directory was lost and that comes back with --join under its old ID and
// raft address is still in the configuration, so /join only registers it again; the core's
// catch-up fence keeps it from voting until the leader brought it up to date (issue 16).
func TestServer_WipedVoterRejoinsAndCatchesUp(t *testing.T) {
	first := singleNode(t, ServerConfig{})
	second := startTestNode(t, NodeConfig{ID: "second", Join: first.HTTPAddr()})
	waitFor(t, 10*time.Second, "the joined node to be a voter", func() bool {
		return isVoter(first.Raft().GetConfiguration().Configuration(), "second") && second.FSM().Members() == 2
	})
	wantStatus(t, do(t, first, "PUT", "/kv/before", "wipe"), http.StatusOK, "put before the wipe")
	raftAddr := string(second.raftAddr)
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	// Same ID, same raft address, an empty data directory.
	again := startTestNode(t, NodeConfig{ID: "second", RaftAddr: raftAddr, Join: first.HTTPAddr()})
	waitFor(t, 10*time.Second, "the wiped node to catch up and vote again", func() bool {
		v, ok := again.FSM().Get("before")
		return ok && v == "wipe" && again.Raft().Stats()["catching_up"] == "false"
	})
	servers := first.Raft().GetConfiguration().Configuration().Servers
	if len(servers) != 2 || !isVoter(first.Raft().GetConfiguration().Configuration(), "second") {
		t.Fatalf("configuration after the rejoin: %+v", servers)
	}
	wantStatus(t, do(t, again, "PUT", "/kv/after", "rejoin"), http.StatusOK, "put through the rejoined node")
}

func TestServer_ClassicSetWithoutValueIs400(t *testing.T) {
	n := singleNode(t, ServerConfig{})
	r := do(t, n, "GET", "/set?key=k", "")
	wantStatus(t, r, http.StatusBadRequest, "/set without value")
	if msg := r.jsonError(t); !strings.Contains(msg, "quote it") || !strings.Contains(msg, "curl 'http://host/set?key=k&value=v'") {
		t.Fatalf("error %q gives no hint to quote the URL", msg)
	}
	if _, found := n.FSM().Get("k"); found {
		t.Fatal("a /set without value stored something")
	}
	wantStatus(t, do(t, n, "GET", "/set?key=k&value=", ""), http.StatusOK, "/set with an empty value")
	if v, found := n.FSM().Get("k"); !found || v != "" {
		t.Fatalf("empty value: %q %v", v, found)
	}
}

func TestServer_BinaryKeysAndValues(t *testing.T) {
	n := singleNode(t, ServerConfig{})
	wantStatus(t, do(t, n, "PUT", "/kv/%FE", "fe"), http.StatusOK, "put %FE")
	wantStatus(t, do(t, n, "PUT", "/kv/%FF", "\xff\x00\xfe"), http.StatusOK, "put %FF")
	if r := do(t, n, "GET", "/kv/%FE", ""); r.body != "fe" || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("GET %%FE: %q %s", r.body, r.header.Get("Content-Type"))
	}
	if r := do(t, n, "GET", "/kv/%FF", ""); r.body != "\xff\x00\xfe" || r.header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("GET %%FF: %q %s", r.body, r.header.Get("Content-Type"))
	}
	if r := do(t, n, "GET", "/get?key=%FF", ""); r.body != "\xff\x00\xfe\n" {
		t.Fatalf("classic GET %%FF: %q", r.body)
	}
}

func TestServer_OverlongURLIs414InJSON(t *testing.T) {
	n := singleNode(t, ServerConfig{MaxValueBytes: 1000})
	r := do(t, n, "GET", "/set?key=k&value="+strings.Repeat("x", 10000), "")
	wantStatus(t, r, http.StatusRequestURITooLong, "overlong URL")
	if msg := r.jsonError(t); !strings.Contains(msg, "PUT /kv/{key}") {
		t.Fatalf("error %q", msg)
	}
}
