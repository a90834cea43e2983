package wal_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
	"github.com/raftkit/raft/wal"
)

// The damaged-node recovery path of docs/operating.md ("Rebuilding a damaged node"), issue 16:
// one follower's data is damaged at a seeded random offset while it is down; it must refuse
// to start (never vote or acknowledge as the voter it was), or start only when nothing it held
// is lost; then the documented path rebuilds it: remove it from the configuration, wipe its
// data, start it empty, add it as a non-voter, wait until it caught up, promote it. Every
// acknowledged write must still be read back on every node, and the safety checker must stay
// clean throughout.

// recoverySeed picks the damaged offsets; every run logs the seed it used.
var recoverySeed = flag.Uint64("wal.recoveryseed", 16, "seed of the damaged-node recovery test (subtest k adds k)")

// damageKind says what part of a node's data gets damaged.
type damageKind struct {
	name string
	// pick returns the file to damage under the node's directory.
	pick func(t *testing.T, nodeDir string) string
}

var damageKinds = []damageKind{
	{"SealedSegment", func(t *testing.T, dir string) string { return segments(t, dir)[0] }},
	{"ActiveSegment", func(t *testing.T, dir string) string { s := segments(t, dir); return s[len(s)-1] }},
	{"SnapshotData", func(t *testing.T, dir string) string { return newestSnapshotFile(t, dir, "state.bin") }},
	{"SnapshotMeta", func(t *testing.T, dir string) string { return newestSnapshotFile(t, dir, "meta.json") }},
}

// segments lists the node's segment files in log order.
func segments(t *testing.T, nodeDir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(nodeDir, "wal", "*.wal"))
	if err != nil || len(paths) < 2 {
		t.Fatalf("node has segments %v (%v); the test needs a sealed and an active one", paths, err)
	}
	sort.Strings(paths)
	return paths
}

// newestSnapshotFile returns file name of the node's newest snapshot.
func newestSnapshotFile(t *testing.T, nodeDir, name string) string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(nodeDir, "snapshots", "*-*-*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("node has snapshots %v (%v)", dirs, err)
	}
	sort.Slice(dirs, func(i, j int) bool { return snapshotIndex(dirs[i]) > snapshotIndex(dirs[j]) })
	return filepath.Join(dirs[0], name)
}

// snapshotIndex reads the index out of a snapshot directory name "<term>-<index>-<stamp>".
func snapshotIndex(dir string) uint64 {
	var term, index, stamp uint64
	fmt.Sscanf(filepath.Base(dir), "%d-%d-%d", &term, &index, &stamp)
	return index
}

// flipRandomByte XORs a seeded random byte of path with a non-zero mask.
func flipRandomByte(t *testing.T, rng *rand.Rand, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		t.Fatalf("reading %s: %d bytes, %v", path, len(b), err)
	}
	off := rng.Int64N(int64(len(b)))
	b[off] ^= byte(1 + rng.IntN(255))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return off
}

// tryStart opens the node's stores and starts Raft on them outside the cluster, the way an
// operator's restart would, and returns why it refused (nil when it started).
func tryStart(t *testing.T, open func(raft.ServerID) (raft.LogStore, raft.StableStore, raft.SnapshotStore, error), id raft.ServerID) error {
	t.Helper()
	logs, stable, snaps, err := open(id)
	if err != nil {
		return err
	}
	defer func() {
		logs.(*wal.Store).Close()
		snaps.(*raft.FileSnapshotStore).Close()
	}()
	trans, err := raft.NewInmemNetwork().NewTransport("probe")
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.DefaultConfig()
	conf.LocalID = id
	conf.Logger = hclog.NewNullLogger()
	r, err := raft.NewRaft(conf, raftest.NewRecordingFSM(), logs, stable, snaps, trans)
	if err != nil {
		trans.Close()
		return err
	}
	r.Shutdown().Error()
	return nil
}

func TestWALCluster_DamagedNodeRefusesToStartAndIsRebuiltFromTheCluster(t *testing.T) {
	for k, kind := range damageKinds {
		t.Run(kind.name, func(t *testing.T) {
			seed := *recoverySeed + uint64(k)
			rng := rand.New(rand.NewPCG(seed, 16))
			root := t.TempDir()
			open := walStores(root, wal.WithSegmentSize(1<<10), wal.WithNoSync())
			opts := withSnapshots(raftest.Options{Nodes: 3, OpenStores: open}, 64, 32)
			raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
				leader := c.WaitLeader(clusterWait)
				victim := (leader + 1) % 3
				id := c.Node(victim).ID
				applyN(t, c, "acked", 400)
				c.WaitFor(clusterWait, "a snapshot on the victim", func() bool {
					return firstIndex(t, c, victim) > 1
				})
				// Small batches after the compaction, so the victim's wal has a sealed and an
				// active segment again.
				for i := 0; i < 30; i++ {
					l := c.Node(c.WaitLeader(clusterWait)).Raft()
					if err := l.Apply(fmt.Appendf(nil, "one-%d", i), clusterWait).Error(); err != nil {
						t.Fatalf("apply: %v", err)
					}
				}
				c.WaitFor(clusterWait, "the victim holds every entry", func() bool {
					return lastIndex(t, c, victim) >= c.Node(c.WaitLeader(clusterWait)).Raft().LastIndex()
				})
				c.Crash(victim)
				path := kind.pick(t, filepath.Join(root, string(id)))
				off := flipRandomByte(t, rng, path)
				err := tryStart(t, open, id)
				t.Logf("seed %d: flipped byte %d of %s; start-up: %v", seed, off, path, err)
				damaged := errors.Is(err, wal.ErrCorrupt) || errors.Is(err, raft.ErrStorageDamaged) ||
					errors.Is(err, raft.ErrSnapshotCorrupt)
				if err != nil && !damaged {
					t.Fatalf("start-up refused with %v, which does not say the storage is damaged", err)
				}
				if err == nil {
					// Nothing the node held was lost (an older snapshot joined the log): it
					// may run as it is.
					c.Start(victim)
				} else {
					rebuild(t, c, root, victim)
				}
				last := applyN(t, c, "after", 50)
				requireSameFSMs(t, c, last, 480)
			})
		})
	}
}

// rebuild is the documented recovery of a node whose data is damaged or lost.
func rebuild(t *testing.T, c *raftest.Cluster, root string, victim int) {
	t.Helper()
	n := c.Node(victim)
	leader := c.Node(c.WaitLeader(clusterWait)).Raft()
	// 1. Take it out of the configuration: it no longer counts toward any quorum.
	if err := leader.RemoveServer(n.ID, 0, clusterWait).Error(); err != nil {
		t.Fatalf("RemoveServer(%s): %v", n.ID, err)
	}
	// 2. Wipe its data (an operator would move it aside for inspection).
	if err := os.RemoveAll(filepath.Join(root, string(n.ID))); err != nil {
		t.Fatal(err)
	}
	// 3. Start it empty, without bootstrapping: it waits to be contacted.
	c.Start(victim)
	// 4. Add it as a non-voter: it catches up from the leader's snapshot and log.
	leader = c.Node(c.WaitLeader(clusterWait)).Raft()
	if err := leader.AddNonvoter(n.ID, n.Addr, 0, clusterWait).Error(); err != nil {
		t.Fatalf("AddNonvoter(%s): %v", n.ID, err)
	}
	commit := leader.CommitIndex()
	c.WaitFor(clusterWait, "the rebuilt node caught up", func() bool {
		r := c.Node(victim).Raft()
		return r != nil && r.AppliedIndex() >= commit
	})
	// 5. Only now promote it back to voter.
	if err := leader.AddVoter(n.ID, n.Addr, 0, clusterWait).Error(); err != nil {
		t.Fatalf("AddVoter(%s): %v", n.ID, err)
	}
	c.WaitFor(clusterWait, "the rebuilt node is a voter again", func() bool {
		f := leader.GetConfiguration()
		if f.Error() != nil {
			return false
		}
		for _, s := range f.Configuration().Servers {
			if s.ID == n.ID {
				return s.Suffrage == raft.Voter
			}
		}
		return false
	})
}
