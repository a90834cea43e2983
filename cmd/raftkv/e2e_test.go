package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raftkit/raft/internal/testnet"
)

// e2eElection is the election and heartbeat timeout of the end-to-end cluster: short, so a
// leader change takes a fraction of a second.
const e2eElection = 150 * time.Millisecond

// e2eCluster is three raftkv processes.
type e2eCluster struct {
	t     *testing.T
	procs []*proc
}

// startE2ECluster starts three bootstrapped processes and waits until each one knows the
// leader and every member's HTTP address. A port taken between picking and binding makes a
// process exit at once; the whole cluster then starts again on new ports.
func startE2ECluster(t *testing.T, extra ...string) *e2eCluster {
	t.Helper()
	return startE2EClusterWith(t, nil, extra...)
}

// startE2EClusterWith is startE2ECluster for nodes whose API https reaches (nil: plain
// HTTP).
func startE2EClusterWith(t *testing.T, https *http.Client, extra ...string) *e2eCluster {
	t.Helper()
	return startE2EClusterOn(t, "", https, extra...)
}

// startE2EClusterOn is startE2EClusterWith with every raft and HTTP address spelled with
// host (a name such as localhost) instead of 127.0.0.1; "" keeps 127.0.0.1.
func startE2EClusterOn(t *testing.T, host string, https *http.Client, extra ...string) *e2eCluster {
	t.Helper()
	dataRoot := t.TempDir()
	for attempt := 1; attempt <= 3; attempt++ {
		c := &e2eCluster{t: t}
		addrs := freeAddrsOn(t, host, 6)
		var members []string
		for i := 0; i < 3; i++ {
			members = append(members, fmt.Sprintf("%d/%s", i+1, addrs[2*i]))
		}
		for i := 0; i < 3; i++ {
			id := fmt.Sprint(i + 1)
			p := &proc{id: id, raftAddr: addrs[2*i], httpAddr: addrs[2*i+1], https: https,
				dataDir: filepath.Join(dataRoot, fmt.Sprintf("try%d-node%s", attempt, id))}
			p.args = []string{
				"--raft_id=" + id, "--raft_addr=" + p.raftAddr, "--http_addr=" + p.httpAddr,
				"--raft_cluster=" + strings.Join(members, ","),
				"--data_dir=" + p.dataDir,
				"--heartbeat_timeout=" + e2eElection.String(), "--election_timeout=" + e2eElection.String(),
				"--commit_timeout=20ms", "--request_timeout=3s", "--log_level=warn",
				// Snapshot and compact often, so restarts go through snapshots too.
				"--snapshot_threshold=8", "--snapshot_interval=100ms", "--trailing_logs=4",
			}
			p.args = append(p.args, extra...)
			p.start(t)
			c.procs = append(c.procs, p)
		}
		t.Cleanup(func() { c.dumpIfFailed() })
		if c.waitReady(20 * time.Second) {
			return c
		}
		lostRace := false
		for _, p := range c.procs {
			lostRace = lostRace || strings.Contains(p.stderr.String(), "address already in use")
			p.kill()
		}
		if !lostRace {
			t.Fatal("the cluster did not become ready")
		}
		t.Logf("attempt %d lost a port race; retrying on new ports", attempt)
	}
	t.Fatal("could not start the cluster on free ports")
	return nil
}

// freeAddrsOn is testnet.FreeLoopbackAddrs with the host spelled as host ("" keeps
// 127.0.0.1, which host must resolve to).
func freeAddrsOn(t *testing.T, host string, n int) []string {
	t.Helper()
	addrs := testnet.FreeLoopbackAddrs(t, n)
	if host == "" {
		return addrs
	}
	for i, a := range addrs {
		_, port, _ := net.SplitHostPort(a)
		addrs[i] = net.JoinHostPort(host, port)
	}
	return addrs
}

// waitReady waits until every running process knows the leader and every member's address.
func (c *e2eCluster) waitReady(timeout time.Duration) bool {
	return poll(timeout, func() bool {
		for _, p := range c.procs {
			if !p.running() {
				return false
			}
			st, ok := status(p)
			if !ok || st.Leader.HTTPAddr == "" || len(st.Configuration) != len(c.procs) {
				return false
			}
			for _, s := range st.Configuration {
				if s.HTTPAddr == "" {
					return false
				}
			}
		}
		return true
	})
}

func (c *e2eCluster) dumpIfFailed() {
	if !c.t.Failed() {
		return
	}
	for _, p := range c.procs {
		c.t.Logf("---- node %s (%s) stderr:\n%s", p.id, p.httpAddr, p.stderr.String())
	}
}

// leader returns the process that leads, as the running nodes see it.
func (c *e2eCluster) leader() *proc {
	c.t.Helper()
	var leader *proc
	ok := poll(10*time.Second, func() bool {
		for _, p := range c.procs {
			if st, ok := status(p); ok && st.Role == "leader" {
				leader = p
				return true
			}
		}
		return false
	})
	if !ok {
		c.t.Fatal("no leader")
	}
	return leader
}

// put writes key=value through node p, retrying 503s (no leader yet) until the deadline, and
// fails the test if it never succeeds.
func (c *e2eCluster) put(p *proc, key, value string, timeout time.Duration) {
	c.t.Helper()
	var code int
	var body string
	if !poll(timeout, func() bool {
		code, body = call("PUT", "http://"+p.httpAddr+"/kv/"+key, value)
		return code == http.StatusOK
	}) {
		c.t.Fatalf("PUT %s via node %s: %d %s", key, p.id, code, body)
	}
}

// checkAll reads every key from every running node, linearizable and stale, and expects the
// acknowledged values (deleted keys must be absent).
func (c *e2eCluster) checkAll(acked map[string]string, deleted []string) {
	c.t.Helper()
	for _, p := range c.procs {
		if !p.running() {
			continue
		}
		for key, want := range acked {
			if code, body := call("GET", "http://"+p.httpAddr+"/kv/"+key, ""); code != http.StatusOK || body != want {
				c.t.Errorf("linearizable GET %s on node %s: %d %q, want %q", key, p.id, code, body, want)
			}
		}
		for _, key := range deleted {
			if code, body := call("GET", "http://"+p.httpAddr+"/kv/"+key, ""); code != http.StatusNotFound {
				c.t.Errorf("GET of deleted %s on node %s: %d %q, want 404", key, p.id, code, body)
			}
		}
		// Stale reads converge once the node applied everything.
		if !poll(10*time.Second, func() bool {
			for key, want := range acked {
				if code, body := call("GET", "http://"+p.httpAddr+"/kv/"+key+"?consistency=stale", ""); code != http.StatusOK || body != want {
					return false
				}
			}
			return true
		}) {
			c.t.Errorf("stale reads on node %s never showed every acknowledged value", p.id)
		}
	}
}

func TestRaftkv_EndToEnd(t *testing.T) {
	c := startE2ECluster(t)
	acked := make(map[string]string)

	// Writes through every node (forwarded by followers), classic and REST.
	for i, p := range c.procs {
		key := fmt.Sprintf("before-%d", i)
		c.put(p, key, "v-"+key, 5*time.Second)
		acked[key] = "v-" + key
		if code, body := call("GET", fmt.Sprintf("http://%s/set?key=classic-%d&value=c%d", p.httpAddr, i, i), ""); code != http.StatusOK {
			t.Fatalf("classic set via node %s: %d %s", p.id, code, body)
		}
		acked[fmt.Sprintf("classic-%d", i)] = fmt.Sprintf("c%d", i)
	}
	for _, p := range c.procs {
		if code, body := call("GET", "http://"+p.httpAddr+"/get?key=classic-0", ""); code != http.StatusOK || body != "c0\n" {
			t.Fatalf("classic get on node %s: %d %q", p.id, code, body)
		}
	}
	// Binary keys and values: every byte survives, on every node.
	binary := putBinary(t, c)
	c.put(c.procs[0], "doomed", "x", 5*time.Second)
	if code, body := call("DELETE", "http://"+c.procs[1].httpAddr+"/kv/doomed", ""); code != http.StatusOK {
		t.Fatalf("DELETE via node 2: %d %s", code, body)
	}
	deleted := []string{"doomed"}
	c.checkAll(acked, deleted)

	// kill -9 the leader; a survivor must take writes within a few election timeouts.
	old := c.leader()
	old.kill()
	survivors := make([]*proc, 0, 2)
	for _, p := range c.procs {
		if p != old {
			survivors = append(survivors, p)
		}
	}
	// Writes through both survivors every 50ms: a follower waits for the new leader instead
	// of answering 503, so none fails for want of a leader. (On a loaded machine a new
	// leader may lose its 75ms lease once: "outcome unknown" then is an honest answer, and
	// at most two such are tolerated.)
	start := time.Now()
	var firstOK time.Duration
	unknown := 0
	for i := 0; i < 30; i++ {
		key := fmt.Sprintf("after-%d", i)
		code, body := call("PUT", "http://"+survivors[i%2].httpAddr+"/kv/"+key, "v-"+key)
		if code != http.StatusOK {
			if unknown++; unknown > 2 || !strings.Contains(body, "outcome unknown") {
				t.Errorf("write %d through node %s, %v after the kill: %d %s", i, survivors[i%2].id, time.Since(start), code, body)
			}
			continue
		}
		if firstOK == 0 {
			firstOK = time.Since(start)
		}
		acked[key] = "v-" + key
		time.Sleep(50 * time.Millisecond) // the pacing of a client, not synchronization
	}
	t.Logf("killed leader %s; the first write after it succeeded in %v (election timeout %v)", old.id, firstOK, e2eElection)
	if firstOK > 20*e2eElection {
		t.Errorf("the first write after the leader died took %v, more than 20 election timeouts", firstOK)
	}
	c.checkAll(acked, deleted)

	// The killed node restarts from its data directory and catches up.
	old.start(t)
	if !c.waitReady(20 * time.Second) {
		t.Fatalf("node %s did not rejoin", old.id)
	}
	c.put(old, "rejoined", "yes", 5*time.Second)
	acked["rejoined"] = "yes"
	c.checkAll(acked, deleted)
	// The restarted node restored its snapshot and caught up: the binary data is intact.
	checkBinary(t, c, binary)

	// With a snapshot threshold of 8, the FSM's snapshots went to disk on the way.
	if !poll(5*time.Second, func() bool {
		for _, p := range c.procs {
			if entries, _ := os.ReadDir(filepath.Join(p.dataDir, "snapshots")); len(entries) > 0 {
				return true
			}
		}
		return false
	}) {
		t.Error("no node ever wrote a snapshot")
	}

	// Prometheus text on /metrics, with the README's names: per-peer lag on the leader, and
	// the progress of the snapshot the restarted node needed.
	if !poll(10*time.Second, func() bool {
		var all string
		for _, p := range c.procs {
			_, body := call("GET", "http://"+p.httpAddr+"/metrics", "")
			all += body
		}
		return strings.Contains(all, "raft_replication_lag_entries{peer=") &&
			strings.Contains(all, "raft_commit_commit_time") && strings.Contains(all, "raft_snapshot_send_size_bytes{peer=")
	}) {
		_, body := call("GET", "http://"+c.leader().httpAddr+"/metrics", "")
		t.Errorf("metrics lack the lag or snapshot progress gauges:\n%s", body)
	}

	// SIGTERM shuts every node down cleanly.
	for _, p := range c.procs {
		start := time.Now()
		if err := p.stop(t, 10*time.Second); err != nil {
			t.Errorf("node %s exited with %v after SIGTERM", p.id, err)
		}
		t.Logf("node %s exited %v after SIGTERM", p.id, time.Since(start))
	}
}
