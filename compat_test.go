package raft_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// nodeRelease plays a node of some release: the protocol versions it speaks and the one its
// requests carry.
type nodeRelease struct{ lo, hi, send int }

// TestProtocolVersion_RollingUpgradeRefusesPeerOutsideRange runs one cluster with nodes of
// three releases: n1 speaks versions 1-2 and sends 2, n2 speaks 1-2 and sends 1 (both in each
// other's range), n3 speaks only version 3. n1 and n2 elect a leader and commit; n3 is refused
// with ErrUnsupportedProtocol and refuses them, so it never joins in. Then n3 is "upgraded" to a
// release speaking 1-2 and catches up: the last step of a rolling upgrade.
func TestProtocolVersion_RollingUpgradeRefusesPeerOutsideRange(t *testing.T) {
	releases := map[raft.ServerID]nodeRelease{"n1": {1, 2, 2}, "n2": {1, 2, 1}, "n3": {3, 3, 3}}
	opts := raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		rel := releases[c.LocalID]
		raft.SetProtocolRange(c, rel.lo, rel.hi)
		c.ProtocolVersion = rel.send
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		if c.Node(leader).ID == "n3" {
			t.Fatal("n3, which no peer understands, became leader")
		}
		var last uint64
		for i := 0; i < 5; i++ {
			last = mustApply(t, c, "before upgrade").Index()
		}
		c.WaitFor(waitLong, "n1 and n2 apply every write", func() bool {
			return c.Node(0).Raft().AppliedIndex() >= last && c.Node(1).Raft().AppliedIndex() >= last
		})
		if got := c.Node(2).Raft().LastIndex(); got >= last {
			t.Fatalf("n3 holds index %d though it speaks no version of its peers", got)
		}

		probe, err := c.Net.NewTransport("probe")
		if err != nil {
			t.Fatal(err)
		}
		vote := func(target int, version int) (*raft.RequestVoteResponse, error) {
			req := &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: version, ID: "probe", Addr: "probe"}}
			var resp raft.RequestVoteResponse
			return &resp, probe.RequestVote("", c.Node(target).Addr, req, &resp)
		}
		// Each in-range version is accepted and answered in that version.
		for _, v := range []int{1, 2} {
			resp, err := vote(0, v)
			if err != nil {
				t.Fatalf("version %d to n1: %v", v, err)
			}
			if resp.ProtocolVersion != v {
				t.Fatalf("n1 answered a version %d request in version %d", v, resp.ProtocolVersion)
			}
		}
		// Out of range, both ways, with an error that says what happened.
		for target, v := range map[int]int{0: 3, 2: 1} {
			_, err := vote(target, v)
			if !errors.Is(err, raft.ErrUnsupportedProtocol) {
				t.Fatalf("version %d to %s: got %v, want ErrUnsupportedProtocol", v, c.Node(target).ID, err)
			}
			if msg := err.Error(); !strings.Contains(msg, "sends version") || !strings.Contains(msg, "speaks") {
				t.Fatalf("error %q does not name both versions", msg)
			}
		}

		// Upgrade n3 to a release in range: it restarts from its stores and catches up.
		c.Crash(2)
		releases["n3"] = nodeRelease{1, 2, 2}
		c.Start(2)
		last = mustApply(t, c, "after upgrade").Index()
		c.WaitApplied(last, waitLong)
		c.CheckSafety()
	})
}

func TestConfig_ProtocolVersionOutsideBuildRangeIsInvalid(t *testing.T) {
	for _, v := range []int{-1, raft.ProtocolVersionMax + 1} {
		conf := raft.DefaultConfig()
		conf.LocalID = "a"
		conf.ProtocolVersion = v
		if err := raft.ValidateConfig(conf); !errors.Is(err, raft.ErrInvalidConfig) {
			t.Errorf("ProtocolVersion %d: got %v, want ErrInvalidConfig", v, err)
		}
	}
	conf := raft.DefaultConfig()
	conf.LocalID = "a"
	if conf.ProtocolVersion != raft.ProtocolVersionMax {
		t.Errorf("default ProtocolVersion %d, want ProtocolVersionMax %d", conf.ProtocolVersion, raft.ProtocolVersionMax)
	}
	conf.ProtocolVersion = 0
	if err := raft.ValidateConfig(conf); err != nil {
		t.Errorf("ProtocolVersion 0 (meaning the newest): %v", err)
	}
}
