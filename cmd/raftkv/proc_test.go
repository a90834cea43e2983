package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/raftkit/raft/cmd/raftkv/kv"
)

// binary is the raftkv executable TestMain builds for the tests that run real processes.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "raftkv-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "raftkv")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building raftkv:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for the process's writer and the test's reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is one raftkv process.
type proc struct {
	id, raftAddr, httpAddr string
	dataDir                string
	args                   []string
	cmd                    *exec.Cmd
	stdout, stderr         *syncBuffer
	exited                 chan struct{} // closed once Wait returned; err is set before
	err                    error
	// https, when set, is the client that reaches a TLS node's API (status uses it).
	https *http.Client
}

// start runs the process; a goroutine waits for its exit and closes p.exited.
func (p *proc) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(binary, p.args...)
	p.stdout, p.stderr = &syncBuffer{}, &syncBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.exited = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting node %s: %v", p.id, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.exited
}

// stop sends SIGTERM and returns the exit error, or fails if the process does not exit in
// time.
func (p *proc) stop(t *testing.T, timeout time.Duration) error {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		p.kill()
		t.Fatalf("node %s did not exit within %v of SIGTERM", p.id, timeout)
		return nil
	}
}

// poll calls cond every 20ms until it holds or timeout passes.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return cond()
		}
	}
	return true
}

var client = &http.Client{Timeout: 5 * time.Second}

// call sends one request to a node and returns the status and body; a transport error is
// status 0 with the error text as the body.
func call(method, url, body string) (int, string) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// status returns a node's /status, or false when it does not answer.
func status(p *proc) (kv.Status, bool) {
	var code int
	var body string
	if p.https != nil {
		code, body, _ = send(p.https, "GET", "https://"+p.httpAddr+"/status", "", nil)
	} else {
		code, body = call("GET", "http://"+p.httpAddr+"/status", "")
	}
	var st kv.Status
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil {
		return kv.Status{}, false
	}
	return st, true
}
