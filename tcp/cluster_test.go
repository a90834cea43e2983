package tcp_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
	"github.com/raftkit/raft/tcp"
)

// Whole clusters over TCP on loopback, in real time: sockets are not something a synctest
// bubble can wait on.

// clusterWait bounds every wait of these tests; a loaded 2-core machine under -race meets it.
const clusterWait = 30 * time.Second

// loopbackTransports returns an Options.NewTransport that binds 127.0.0.1 on an ephemeral
// port at a node's first start and the same port at every restart. With tlsConfs, node nK
// uses tlsConfs[K-1].
func loopbackTransports(tlsConfs []*tls.Config) func(raft.ServerID, raft.ServerAddress, hclog.Logger) (raft.Transport, error) {
	return func(id raft.ServerID, addr raft.ServerAddress, logger hclog.Logger) (raft.Transport, error) {
		bind := "127.0.0.1:0"
		if addr != "" {
			bind = string(addr)
		}
		opts := tcp.Options{Logger: logger, Timeout: 5 * time.Second}
		var trans *tcp.Transport
		var err error
		if tlsConfs == nil {
			trans, err = tcp.NewTransport(bind, nil, opts)
		} else {
			k, convErr := strconv.Atoi(strings.TrimPrefix(string(id), "n"))
			if convErr != nil || k < 1 || k > len(tlsConfs) {
				return nil, fmt.Errorf("no TLS configuration for node %s", id)
			}
			trans, err = tcp.NewTLSTransport(bind, nil, tlsConfs[k-1], opts)
		}
		if err != nil {
			return nil, err
		}
		return trans, nil
	}
}

// clusterOptions returns raftest options for n nodes over loopback TCP. Timeouts are longer
// than raftest's in-memory defaults: real time on two shared cores under -race can stall a
// heartbeat for tens of milliseconds.
func clusterOptions(n int, tlsConfs []*tls.Config) raftest.Options {
	return raftest.Options{
		Nodes:        n,
		NewTransport: loopbackTransports(tlsConfs),
		// Real time over real sockets: a loaded machine (seen at load average 20) deposed a
		// leader with 500ms timeouts in the middle of 10,000 applies, and an apply whose
		// outcome is unknown cannot be retried. Elections are not what these tests check.
		Config: func(c *raft.Config) {
			c.HeartbeatTimeout = time.Second
			c.ElectionTimeout = time.Second
			c.LeaderLeaseTimeout = time.Second
		},
	}
}

// applyConcurrently applies total commands "cmd-<i>" from workers goroutines through
// whoever leads and fails the test if any is not acknowledged. Each command is retried only
// on errors that guarantee it was not applied, so none can be applied twice.
func applyConcurrently(t *testing.T, c *raftest.Cluster, prefix string, workers, total int) uint64 {
	t.Helper()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		maxIndex uint64
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += workers {
				f, err := c.Apply(fmt.Appendf(nil, "%s-%d", prefix, i), clusterWait)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("command %d: %w", i, err)
				}
				if err == nil {
					maxIndex = max(maxIndex, f.Index())
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return maxIndex
}

// requireEqualFSMs waits until every node applied index, then checks every node applied
// the same commands: want of them, each once.
func requireEqualFSMs(t *testing.T, c *raftest.Cluster, index uint64, want int) {
	t.Helper()
	cmds := c.WaitSameCommands(index, clusterWait)
	if len(cmds) != want {
		t.Fatalf("nodes applied %d commands, want %d", len(cmds), want)
	}
	seen := make(map[string]bool, len(cmds))
	for _, cmd := range cmds {
		if seen[cmd] {
			t.Fatalf("command %q applied twice", cmd)
		}
		seen[cmd] = true
	}
	c.CheckSafety()
}

func TestTCPCluster_ElectsAndReplicatesTenThousandConcurrentApplies(t *testing.T) {
	const total = 10000
	for _, nodes := range []int{3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			c := raftest.New(t, clusterOptions(nodes, nil))
			c.WaitLeader(clusterWait)
			start := time.Now()
			last := applyConcurrently(t, c, "cmd", 64, total)
			t.Logf("%d applies from 64 goroutines in %v", total, time.Since(start))
			requireEqualFSMs(t, c, last, total)
		})
	}
}

func TestTCPCluster_LeaderRestartRejoinsAndCatchesUp(t *testing.T) {
	for _, nodes := range []int{3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			c := raftest.New(t, clusterOptions(nodes, nil))
			old := c.WaitLeader(clusterWait)
			oldAddr := c.Node(old).Addr
			applyConcurrently(t, c, "before", 16, 500)
			c.Crash(old)
			c.WaitFor(clusterWait, "a new leader", func() bool {
				l := c.Leader()
				return l >= 0 && l != old
			})
			// Entries the old leader never saw, so it must catch up after rejoining.
			applyConcurrently(t, c, "during", 16, 500)
			c.Start(old)
			if c.Node(old).Addr != oldAddr {
				t.Fatalf("restarted node has address %s, want its old %s", c.Node(old).Addr, oldAddr)
			}
			last := applyConcurrently(t, c, "after", 16, 500)
			requireEqualFSMs(t, c, last, 1500)
		})
	}
}

func TestTLSCluster_MutualTLSElectsReplicatesAndRestarts(t *testing.T) {
	c := raftest.New(t, clusterOptions(3, tcp.MutualTLSConfigs(t, 3)))
	leader := c.WaitLeader(clusterWait)
	applyConcurrently(t, c, "tls", 8, 200)
	follower := (leader + 1) % 3
	c.Restart(follower)
	last := applyConcurrently(t, c, "tls-after", 8, 200)
	requireEqualFSMs(t, c, last, 400)
}

// Follower reads over TCP: a follower asks the leader for a read index with the ReadIndex
// frame and sees every write acknowledged before it asked, with and without a lease; a read
// on a follower whose leader is gone fails with ErrNoLeader rather than waiting.
func TestTCPCluster_FollowerReadIndex(t *testing.T) {
	opts := clusterOptions(3, nil)
	c := raftest.New(t, opts)
	leader := c.WaitLeader(clusterWait)
	var follower int
	for i := range c.Nodes() {
		if i != leader {
			follower = i
			break
		}
	}
	c.WaitFor(clusterWait, "the follower to know the leader", func() bool {
		_, id := c.Node(follower).Raft().LeaderWithID()
		return id != ""
	})
	fr := c.Node(follower).Raft()
	for i := 0; i < 10; i++ {
		cmd := fmt.Sprintf("w%d", i)
		f, err := c.Apply([]byte(cmd), clusterWait)
		if err != nil {
			t.Fatalf("apply %s: %v", cmd, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
		rf := fr.ReadIndexContext(ctx, raft.WithLease(i%2 == 1))
		err = rf.Error()
		cancel()
		if err != nil {
			t.Fatalf("follower read %d: %v", i, err)
		}
		if rf.Index() < f.Index() {
			t.Fatalf("follower read index %d is behind the acknowledged write at %d", rf.Index(), f.Index())
		}
		entries := c.Node(follower).FSM().(*raftest.RecordingFSM).Entries()
		if len(entries) == 0 || string(entries[len(entries)-1].Data) != cmd {
			t.Fatalf("follower FSM after its read does not end with %s", cmd)
		}
	}
	c.Crash(leader)
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	err := fr.ReadIndexContext(ctx).Error()
	if err == nil {
		t.Fatal("follower read succeeded with its leader down")
	}
	if !errors.Is(err, raft.ErrNoLeader) {
		t.Fatalf("follower read with its leader down: %v, want ErrNoLeader", err)
	}
}

func TestTCPCluster_RefusesPeerOutsideProtocolRange(t *testing.T) {
	c := raftest.New(t, clusterOptions(3, nil))
	leader := c.WaitLeader(clusterWait)
	probe, err := tcp.NewTransport("127.0.0.1:0", nil, tcp.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax + 1, ID: "probe", Addr: probe.LocalAddr()}
	var resp raft.AppendEntriesResponse
	err = probe.AppendEntries("", c.Node(leader).Addr, &raft.AppendEntriesRequest{RPCHeader: header, Term: 1}, &resp)
	if !errors.Is(err, raft.ErrUnsupportedProtocol) {
		t.Fatalf("got %v, want an error matching raft.ErrUnsupportedProtocol across TCP", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("sends version %d", raft.ProtocolVersionMax+1)) {
		t.Fatalf("error %q does not name the refused version", err)
	}
	// The node refused the peer, not the connection: it goes on leading.
	applyConcurrently(t, c, "after", 4, 20)
}
