package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/raftkit/raft/internal/testnet"
	"github.com/raftkit/raft/wal"
)

// runToExit runs raftkv with args in a fresh working directory and returns its exit code and
// stderr; it fails the test if the process does not exit within 10s.
func runToExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := &proc{id: "x", args: args}
	p.start(t)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.kill()
		t.Fatalf("raftkv %v did not exit", args)
	}
	var exitErr *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exitErr) {
		t.Fatalf("raftkv %v: %v", args, p.err)
	}
	return p.cmd.ProcessState.ExitCode(), p.stderr.String()
}

func TestRaftkv_StartupErrorsExitWithOneLine(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := testnet.FreeLoopbackAddrs(t, 2)
	dir := t.TempDir()
	locked := t.TempDir()
	held, err := wal.Open(filepath.Join(locked, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	emptyFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--data_dir=" + dir, "--raft_addr=" + free[0], "--http_addr=" + free[1]}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"malformed cluster", []string{"--raft_cluster=1=" + free[0]}, "--raft_cluster: cluster entry"},
		{"cluster without port", []string{"--raft_cluster=1/127.0.0.1"}, "missing port"},
		{"duplicate id", []string{"--raft_cluster=1/" + free[0] + ",1/127.0.0.1:1"}, "duplicate id 1"},
		{"id not in cluster", []string{"--raft_id=9", "--raft_cluster=1/" + free[0]}, "id 9 is not in the cluster"},
		{"address differs from cluster", []string{"--raft_cluster=1/127.0.0.1:1"}, "differs from 127.0.0.1:1"},
		{"http port in use", []string{"--http_addr=" + busy.Addr().String()}, "address already in use"},
		{"raft port in use", []string{"--raft_addr=" + busy.Addr().String()}, "address already in use"},
		{"wildcard raft address", []string{"--raft_addr=0.0.0.0:0"}, "0.0.0.0:0 is a wildcard"},
		{"wildcard http address", []string{"--http_addr=0.0.0.0:0"}, "0.0.0.0:0 is a wildcard"},
		{"data directory locked", []string{"--data_dir=" + locked}, "locked by another store"},
		{"bad timeouts", []string{"--heartbeat_timeout=1ms"}, "HeartbeatTimeout"},
		{"unknown log level", []string{"--log_level=loud"}, "unknown log level"},
		{"stray argument", []string{"serve"}, `unexpected argument "serve"`},
		{"negative max value", []string{"--max_value_bytes=-5"}, "--max_value_bytes=-5"},
		{"huge max value", []string{"--max_value_bytes=100000000"}, "--max_value_bytes=100000000"},
		{"half the tls flags", []string{"--tls_cert=x.pem"}, "go together"},
		{"missing tls files", []string{"--tls_cert=/nonexistent.pem", "--tls_key=/nonexistent-key.pem", "--tls_ca=/nonexistent-ca.pem"}, "--tls_cert/--tls_key"},
		{"empty token file", []string{"--token_file=" + emptyFile}, "holds no token"},
	}
	if code, stderr := runToExit(t, "--no_such_flag"); code != 2 || !strings.Contains(stderr, "flag provided but not defined: -no_such_flag") {
		t.Errorf("unknown flag: exit %d, stderr %q; want exit 2 and the flag package's message", code, stderr)
	}
	for _, c := range cases {
		code, stderr := runToExit(t, append(append([]string{}, base...), c.args...)...)
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "raftkv: ") || !strings.Contains(lines[0], c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and one line \"raftkv: ...%s...\"", c.name, code, stderr, c.want)
		}
	}
}

var urlRE = regexp.MustCompile(`node (\d): http://(\S+)`)

func TestRaftkv_DevModeServesAndStopsOnInterrupt(t *testing.T) {
	p := &proc{id: "dev", args: []string{"dev", "--dev_base_port=0", "--heartbeat_timeout=150ms", "--election_timeout=150ms"}}
	p.start(t)
	defer p.kill()
	var urls []string
	if !poll(20*time.Second, func() bool {
		out := p.stdout.String()
		if !strings.Contains(out, "Press Ctrl-C to stop.") {
			return false
		}
		for _, m := range urlRE.FindAllStringSubmatch(out, -1) {
			urls = append(urls, "http://"+m[2])
		}
		return true
	}) {
		t.Fatalf("no banner; stdout %q stderr %q", p.stdout.String(), p.stderr.String())
	}
	if len(urls) != 3 {
		t.Fatalf("banner lists %d nodes, want 3:\n%s", len(urls), p.stdout.String())
	}
	if code, body := call("GET", urls[0]+"/set?key=hello&value=world", ""); code != http.StatusOK {
		t.Fatalf("set: %d %s", code, body)
	}
	for _, u := range urls {
		if code, body := call("GET", u+"/get?key=hello", ""); code != http.StatusOK || body != "world\n" {
			t.Fatalf("get on %s: %d %q", u, code, body)
		}
	}
	dir := strings.Fields(strings.SplitN(p.stdout.String(), "data in ", 2)[1])[0]
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data directory %s: %v", dir, err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("dev mode did not exit within 15s of SIGINT")
	}
	if p.err != nil {
		t.Fatalf("dev mode exited with %v; stderr:\n%s", p.err, p.stderr.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data directory %s still exists after exit (%v)", dir, err)
	}
	last := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	var lastLine string
	for last.Scan() {
		lastLine = last.Text()
	}
	if lastLine != "shutting down" {
		t.Errorf("last stdout line %q, want \"shutting down\"", lastLine)
	}
}

// TestRaftkv_JSONLogsAndAJoinRefusedForGood runs one node with --log_json (every stderr line
// is a JSON object) and a second process joining it under the ID the first already has: it
// exits with status 1 and says why.
func TestRaftkv_JSONLogsAndAJoinRefusedForGood(t *testing.T) {
	addrs := testnet.FreeLoopbackAddrs(t, 4)
	member := &proc{id: "1", raftAddr: addrs[0], httpAddr: addrs[1], dataDir: t.TempDir()}
	member.args = []string{"--raft_addr=" + addrs[0], "--http_addr=" + addrs[1], "--data_dir=" + member.dataDir,
		"--log_json", "--heartbeat_timeout=150ms"}
	member.start(t)
	defer member.kill()
	if !poll(20*time.Second, func() bool {
		st, ok := status(member)
		return ok && st.Role == "leader" && st.Join != nil && st.Join.State == "joined"
	}) {
		t.Fatalf("the member did not come up: %s", member.stderr.String())
	}
	code, stderr := runToExit(t, "--raft_id=1", "--raft_addr="+addrs[2], "--http_addr="+addrs[3],
		"--data_dir="+t.TempDir(), "--join="+addrs[1], "--heartbeat_timeout=150ms")
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.HasPrefix(last, "raftkv: ") || !strings.Contains(last, "join refused") || !strings.Contains(last, "already a member") {
		t.Fatalf("joining under a taken ID: exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stderr, "[WARN]") || !strings.Contains(stderr, "join can never succeed") {
		t.Fatalf("no WARN with the reason before the exit: %q", stderr)
	}
	if err := member.stop(t, 10*time.Second); err != nil {
		t.Fatalf("member exited with %v", err)
	}
	for _, line := range strings.Split(strings.TrimRight(member.stderr.String(), "\n"), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil || entry["@message"] == nil {
			t.Fatalf("--log_json wrote a line that is not a JSON log entry: %q (%v)", line, err)
		}
	}
}
