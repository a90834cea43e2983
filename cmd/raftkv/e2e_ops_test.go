package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	mrand "math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raftkit/raft/internal/testnet"
)

// putBinary writes random binary keys and values (and two keys JSON would have merged)
// through the nodes, and checks each one reads back byte for byte everywhere.
func putBinary(t *testing.T, c *e2eCluster) map[string]string {
	t.Helper()
	seed := time.Now().UnixNano()
	t.Logf("binary data seed %d", seed)
	rng := mrand.New(mrand.NewSource(seed))
	want := map[string]string{"\xfe": "fe", "\xff": "ff"}
	for i := 0; i < 20; i++ {
		k := make([]byte, 1+rng.Intn(40))
		v := make([]byte, rng.Intn(64<<10))
		rng.Read(k)
		rng.Read(v)
		want[string(k)] = string(v)
	}
	i := 0
	for k, v := range want {
		p := c.procs[i%len(c.procs)]
		i++
		c.put(p, url.PathEscape(k), v, 5*time.Second)
	}
	checkBinary(t, c, want)
	return want
}

// checkBinary reads every key from every running node (linearizable) and compares bytes.
func checkBinary(t *testing.T, c *e2eCluster, want map[string]string) {
	t.Helper()
	for _, p := range c.procs {
		if !p.running() {
			continue
		}
		for k, v := range want {
			code, body := call("GET", "http://"+p.httpAddr+"/kv/"+url.PathEscape(k), "")
			if code != http.StatusOK || body != v {
				t.Fatalf("binary GET %q on node %s: %d, %d bytes; want %d bytes", k, p.id, code, len(body), len(v))
			}
		}
	}
}

// testPKI is a CA and certificates for 127.0.0.1, written as PEM files.
type testPKI struct {
	*testnet.CA
	dir    string
	caFile string
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	ca, err := testnet.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	pki := &testPKI{CA: ca, dir: t.TempDir()}
	pki.caFile = pki.write(t, name+"-ca.pem", ca.PEM)
	return pki
}

func (p *testPKI) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	file := filepath.Join(p.dir, name)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// issue returns the files of a certificate for 127.0.0.1 signed by the CA, good as server
// and as client.
func (p *testPKI) issue(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	leaf, err := p.Issue(name)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", leaf.CertPEM), p.write(t, name+"-key.pem", leaf.KeyPEM)
}

// clientTLS trusts the CA and presents the given certificate (none if certFile is empty),
// whatever CAs the server names, so a rogue certificate reaches the server's verification.
func (p *testPKI) clientTLS(t *testing.T, certFile, keyFile string) *tls.Config {
	t.Helper()
	conf := &tls.Config{RootCAs: p.Pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return conf
}

// httpsClient is an HTTPS client with clientTLS.
func (p *testPKI) httpsClient(t *testing.T, certFile, keyFile string) *http.Client {
	t.Helper()
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: p.clientTLS(t, certFile, keyFile)}}
}

// sendOK sends a request until it answers 200, retrying 503s (an election on a loaded
// machine; every write here is idempotent) for up to 15s, and fails the test otherwise.
func sendOK(t *testing.T, c *http.Client, method, url, token, body string) (string, http.Header) {
	t.Helper()
	var code int
	var got string
	var hdr http.Header
	if !poll(15*time.Second, func() bool {
		code, got, hdr = send(c, method, url, token, strings.NewReader(body))
		return code == http.StatusOK
	}) {
		t.Fatalf("%s %s: %d %s", method, url, code, got)
	}
	return got, hdr
}

// send makes one request with optional token and returns the status, body and headers.
func send(c *http.Client, method, url, token string, body io.Reader) (int, string, http.Header) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, err.Error(), nil
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestRaftkv_SecureClusterAdmin runs three processes with mutual TLS and a token: a peer
// without a valid certificate and requests without the token are refused; backup, restore
// and leadership transfer work through the API.
func TestRaftkv_SecureClusterAdmin(t *testing.T) {
	pki := newTestPKI(t, "cluster")
	rogue := newTestPKI(t, "rogue")
	certFile, keyFile := pki.issue(t, "node")
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "s3cret-token"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Longer timeouts than the other e2e tests: TLS handshakes on a loaded machine would
	// otherwise cost a leader its 75ms lease now and then.
	c := startE2EClusterWith(t, pki.httpsClient(t, "", ""), "--heartbeat_timeout=400ms", "--election_timeout=400ms",
		"--tls_cert="+certFile, "--tls_key="+keyFile, "--tls_ca="+pki.caFile, "--token_file="+tokenFile)
	hc := pki.httpsClient(t, "", "")
	base := func(p *proc) string { return "https://" + p.httpAddr }

	// Data goes over HTTPS, forwarded between the nodes.
	for i, p := range c.procs {
		sendOK(t, hc, "PUT", base(p)+"/kv/k"+fmt.Sprint(i), "", "v")
	}
	// Plain HTTP to the API gets no answer it could mistake for success.
	if code, _ := call("GET", "http://"+c.procs[0].httpAddr+"/kv/k0", ""); code == http.StatusOK {
		t.Fatal("plain HTTP read succeeded on a TLS node")
	}
	// A client certificate from another CA is refused by the API and by the raft port.
	rc, rk := rogue.issue(t, "intruder")
	if code, body, _ := send(pki.httpsClient(t, rc, rk), "GET", base(c.procs[0])+"/status", "", nil); code != 0 {
		t.Fatalf("API accepted a rogue client certificate: %d %s", code, body)
	}
	for _, certs := range [][2]string{{"", ""}, {rc, rk}} {
		if err := raftHandshake(t, pki, c.procs[0].raftAddr, certs[0], certs[1]); err == nil {
			t.Fatalf("raft port accepted a peer with certificate %q", certs[0])
		}
	}
	good, goodKey := pki.issue(t, "peer")
	if err := raftHandshake(t, pki, c.procs[0].raftAddr, good, goodKey); err != nil {
		t.Fatalf("raft port refused a valid peer certificate: %v", err)
	}

	// Admin and membership endpoints need the token, on the leader and through followers.
	for _, p := range c.procs {
		for _, ep := range []struct{ method, path string }{
			{"GET", "/admin/snapshot"}, {"POST", "/admin/restore"}, {"POST", "/admin/transfer"},
			{"POST", "/join"}, {"POST", "/leave"},
		} {
			for _, tok := range []string{"", "wrong"} {
				if code, body, _ := send(hc, ep.method, base(p)+ep.path, tok, nil); code != http.StatusUnauthorized {
					t.Fatalf("%s %s on node %s with token %q: %d %s, want 401", ep.method, ep.path, p.id, tok, code, body)
				}
			}
		}
	}

	// Backup, change, restore: the cluster is back to the backup's state on every node.
	backup, hdr := sendOK(t, hc, "GET", base(c.leader())+"/admin/snapshot", token, "")
	if hdr.Get("X-Raftkv-Snapshot-Index") == "" {
		t.Fatalf("backup without its index header: %v", hdr)
	}
	sendOK(t, hc, "PUT", base(c.procs[1])+"/kv/after-backup", "", "x")
	sendOK(t, hc, "DELETE", base(c.procs[2])+"/kv/k0", "", "")
	if code, body, _ := send(hc, "POST", base(c.procs[2])+"/admin/restore", token, strings.NewReader("not a backup")); code != http.StatusBadRequest {
		t.Fatalf("restore of garbage: %d %s, want 400", code, body)
	}
	// Through a follower; "outcome unknown" (a leader change) means: run it again.
	sendOK(t, hc, "POST", base(c.follower())+"/admin/restore", token, backup)
	for _, p := range c.procs {
		if body, _ := sendOK(t, hc, "GET", base(p)+"/kv/k0", "", ""); body != "v" {
			t.Fatalf("after restore, k0 on node %s: %q", p.id, body)
		}
		code, body := 0, ""
		if !poll(15*time.Second, func() bool {
			code, body, _ = send(hc, "GET", base(p)+"/kv/after-backup", "", nil)
			return code != http.StatusServiceUnavailable
		}) || code != http.StatusNotFound {
			t.Fatalf("after restore, a key written after the backup is on node %s: %d %s", p.id, code, body)
		}
	}

	// Transfer to a chosen follower, then to the most up-to-date node.
	target := c.follower()
	sendOK(t, hc, "POST", base(c.procs[0])+"/admin/transfer?to="+target.id, token, "")
	if l := c.leader(); l != target {
		t.Fatalf("after the transfer to %s, node %s leads", target.id, l.id)
	}
	sendOK(t, hc, "POST", base(target)+"/admin/transfer", token, "")
	if l := c.leader(); l == target {
		t.Fatalf("node %s still leads after transferring away", target.id)
	}
	// Stopping with SIGTERM is clean with TLS too.
	for _, p := range c.procs {
		if err := p.stop(t, 10*time.Second); err != nil {
			t.Errorf("node %s exited with %v after SIGTERM", p.id, err)
		}
	}
}

// raftHandshake dials a raft port with TLS, presenting certFile (none if empty), and returns
// the handshake's error; a server that refuses the client certificate makes the first read
// fail (TLS 1.3 reports the refusal after the client's handshake finished).
func raftHandshake(t *testing.T, pki *testPKI, addr, certFile, keyFile string) error {
	t.Helper()
	conf := pki.clientTLS(t, certFile, keyFile)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	// A keepalive frame (type 0, empty body) needs no answer; a refused client sees the
	// alert on the read, an accepted one a timeout.
	if _, err := conn.Write([]byte{0, 0, 0, 0, 0}); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil
	}
	return err
}

// TestRaftkv_RecoverAfterLosingQuorum kills two of three nodes for good, recovers the
// survivor offline with "raftkv recover", and grows the cluster again with a fresh node.
func TestRaftkv_RecoverAfterLosingQuorum(t *testing.T) {
	c := startE2ECluster(t)
	acked := map[string]string{}
	for i := 0; i < 12; i++ { // past the snapshot threshold: the recovery goes through one
		key := fmt.Sprintf("r%d", i)
		c.put(c.procs[i%3], key, "v"+key, 5*time.Second)
		acked[key] = "v" + key
	}
	survivor := c.procs[0]
	if !poll(10*time.Second, func() bool {
		st, ok := status(survivor)
		return ok && st.AppliedIndex >= st.CommitIndex && st.Keys == len(acked)
	}) {
		t.Fatal("the survivor did not apply every write")
	}
	for _, p := range c.procs[1:] {
		p.kill()
	}
	// Without a quorum no write succeeds.
	if code, _ := call("PUT", "http://"+survivor.httpAddr+"/kv/lost", "x"); code == http.StatusOK {
		t.Fatal("a write succeeded without a quorum")
	}
	if err := survivor.stop(t, 10*time.Second); err != nil {
		t.Fatalf("stopping the survivor: %v", err)
	}
	out, err := exec.Command(binary, "recover", "--raft_id="+survivor.id, "--raft_addr="+survivor.raftAddr, "--data_dir="+survivor.dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("raftkv recover: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("only voter")) {
		t.Fatalf("recover output %q", out)
	}
	// Recovering an empty directory is refused.
	if out, err := exec.Command(binary, "recover", "--data_dir="+t.TempDir()).CombinedOutput(); err == nil {
		t.Fatalf("recover of an empty directory succeeded: %s", out)
	}
	survivor.start(t)
	c.procs = []*proc{survivor}
	if !c.waitReady(20 * time.Second) {
		t.Fatal("the recovered node did not lead alone")
	}
	c.put(survivor, "after-recovery", "yes", 5*time.Second)
	acked["after-recovery"] = "yes"
	c.checkAll(acked, nil)

	// A fresh node joins the recovered cluster and catches up.
	addrs := testnet.FreeLoopbackAddrs(t, 2)
	fresh := &proc{id: "4", raftAddr: addrs[0], httpAddr: addrs[1], dataDir: filepath.Join(t.TempDir(), "node4")}
	fresh.args = []string{"--raft_id=4", "--raft_addr=" + fresh.raftAddr, "--http_addr=" + fresh.httpAddr,
		"--data_dir=" + fresh.dataDir, "--join=" + survivor.httpAddr, "--log_level=warn",
		"--heartbeat_timeout=" + e2eElection.String(), "--commit_timeout=20ms", "--request_timeout=3s"}
	fresh.start(t)
	c.procs = append(c.procs, fresh)
	if !c.waitReady(20 * time.Second) {
		t.Fatal("the fresh node did not join")
	}
	c.checkAll(acked, nil)
	for _, p := range c.procs {
		if err := p.stop(t, 10*time.Second); err != nil {
			t.Errorf("node %s exited with %v after SIGTERM", p.id, err)
		}
	}
}

// follower returns a running node that does not lead.
func (c *e2eCluster) follower() *proc {
	c.t.Helper()
	l := c.leader()
	for _, p := range c.procs {
		if p != l && p.running() {
			return p
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// TestRaftkv_RefusesToBootstrapALostDataDirectory restarts a node of a running cluster on an
// empty data directory: it must refuse to bootstrap (it forgot its votes and its log) and say
// what to do, unless --force_bootstrap; a first start of a node the cluster never saw is not
// refused (covered by every cluster start: nodes start one after another).
func TestRaftkv_RefusesToBootstrapALostDataDirectory(t *testing.T) {
	c := startE2ECluster(t)
	c.put(c.procs[0], "k", "v", 5*time.Second)
	lost := c.procs[2]
	lost.kill()
	if err := os.RemoveAll(lost.dataDir); err != nil {
		t.Fatal(err)
	}
	lost.start(t)
	select {
	case <-lost.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("a node with a wiped data directory kept running")
	}
	stderr := lost.stderr.String()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if lost.cmd.ProcessState.ExitCode() != 1 || !strings.HasPrefix(last, "raftkv: ") || !strings.Contains(last, "already ran") ||
		!strings.Contains(last, "--join") || !strings.Contains(last, lost.dataDir) {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming the directory and the way out", lost.cmd.ProcessState.ExitCode(), stderr)
	}
	// Forced, it starts and serves.
	lost.args = append(lost.args, "--force_bootstrap")
	lost.start(t)
	if !poll(20*time.Second, func() bool { _, ok := status(lost); return ok && lost.running() }) {
		t.Fatalf("the forced node did not come up: %s", lost.stderr.String())
	}
	for _, p := range c.procs {
		if err := p.stop(t, 10*time.Second); err != nil {
			t.Errorf("node %s exited with %v after SIGTERM", p.id, err)
		}
	}
}
