package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRaftkv_HostNameAddresses runs nodes whose raft and HTTP addresses are spelled
// localhost:PORT, as docker-compose spells node1:7101: three bootstrapped with --raft_cluster
// and a fourth that joins with --join. Every node must register its HTTP address (a node
// that advertised the resolved 127.0.0.1 was refused with a 409 and exited), the
// configuration and /status must show the addresses as spelled, and followers must forward
// writes to the leader.
func TestRaftkv_HostNameAddresses(t *testing.T) {
	c := startE2EClusterOn(t, "localhost", nil)
	leader := c.leader()
	for _, p := range c.procs {
		if !strings.HasPrefix(p.raftAddr, "localhost:") || !strings.HasPrefix(p.httpAddr, "localhost:") {
			t.Fatalf("node %s runs on %s and %s, want localhost:PORT", p.id, p.raftAddr, p.httpAddr)
		}
	}

	// A fourth node joins through a follower, which forwards the join to the leader.
	addrs := freeAddrsOn(t, "localhost", 2)
	joiner := &proc{id: "4", raftAddr: addrs[0], httpAddr: addrs[1], dataDir: filepath.Join(t.TempDir(), "node4")}
	joiner.args = []string{"--raft_id=4", "--raft_addr=" + joiner.raftAddr, "--http_addr=" + joiner.httpAddr,
		"--data_dir=" + joiner.dataDir, "--join=" + c.follower().httpAddr, "--log_level=warn",
		"--heartbeat_timeout=" + e2eElection.String(), "--commit_timeout=20ms", "--request_timeout=3s"}
	joiner.start(t)
	c.procs = append(c.procs, joiner)
	if !c.waitReady(20 * time.Second) {
		t.Fatalf("node 4 did not join on %s: %s", joiner.raftAddr, joiner.stderr.String())
	}

	// Every node's /status shows every member under the addresses it was started with, the
	// leader included, and its own join done.
	want := make(map[string]string) // id -> "raft http"
	for _, p := range c.procs {
		want[p.id] = p.raftAddr + " " + p.httpAddr
	}
	if !poll(10*time.Second, func() bool {
		for _, p := range c.procs {
			st, ok := status(p)
			if !ok || st.HTTPAddr != p.httpAddr || st.Join == nil || st.Join.State != "joined" ||
				st.Leader.ID == "" || want[st.Leader.ID] != st.Leader.RaftAddr+" "+st.Leader.HTTPAddr {
				return false
			}
			got := make(map[string]string)
			for _, s := range st.Configuration {
				got[s.ID] = s.RaftAddr + " " + s.HTTPAddr
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return false
			}
		}
		return true
	}) {
		for _, p := range c.procs {
			st, _ := status(p)
			t.Errorf("node %s /status: %+v (join %+v)", p.id, st, st.Join)
		}
		t.Fatalf("the nodes' /status never showed every member as started: %v", want)
	}

	// Writes through every node: the followers forward them to the leader by its HTTP name.
	acked := make(map[string]string)
	for _, p := range c.procs {
		key := "via-" + p.id
		c.put(p, key, "v-"+key, 5*time.Second)
		acked[key] = "v-" + key
	}
	c.checkAll(acked, nil)
	t.Logf("leader %s; every node forwarded and read back %d writes", leader.id, len(acked))

	for _, p := range c.procs {
		if err := p.stop(t, 10*time.Second); err != nil {
			t.Errorf("node %s exited with %v after SIGTERM", p.id, err)
		}
	}
}
