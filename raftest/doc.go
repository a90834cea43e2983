// Package raftest runs whole raftkit clusters inside a test, with faults, and checks that they
// stay safe. Use it to test the library, and to test your own FSM against crashes, partitions
// and leader changes.
//
// A Cluster is N nodes over one raft.InmemNetwork. Every message between nodes is encoded and
// decoded with the real msgpack codec, so nodes never share memory. The network can partition
// nodes (Partition, Isolate, Heal), cut single directions (Cluster.Net.Cut), and drop, delay
// and duplicate messages at random (Cluster.Net.SetFaults, SetDefaultFaults). Nodes can be
// crashed and restarted (Crash, Start, Restart); their stores survive, as a disk would.
//
// Every random decision of a run comes from one seed (Options.Seed, or RAFTEST_SEED from the
// environment, or a fresh one), printed together with the node logs when the test fails.
//
// While the cluster runs, a checker watches two safety properties: at most one leader per
// term, and every node (and every incarnation of a node) applying the same entry at each
// index. CheckSafety adds the Log Matching check over the nodes' logs; call it once the
// cluster is quiet. SafetyErr reports violations without failing, for use between steps.
//
// Run puts the cluster in a testing/synctest bubble: time is virtual, so timeouts cost no
// wall-clock time, runs are fast, and a loaded machine can never make a heartbeat late. Inside
// the bubble, pace any load generator with a timer (<-time.After(d)): the cluster does any
// amount of work in zero virtual time. New runs a cluster in real time, for transports and
// stores that do real I/O.
//
// A test of a user FSM:
//
//	func TestKV_SurvivesLeaderCrash(t *testing.T) {
//		opts := raftest.Options{Nodes: 3, NewFSM: func(raft.ServerID) raft.FSM { return kv.NewFSM() }}
//		raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
//			c.WaitLeader(5 * time.Second)
//			f, err := c.Apply(kv.Set("x", "1"), 5*time.Second)
//			if err != nil {
//				t.Fatal(err)
//			}
//			c.Crash(c.Leader())
//			c.WaitLeader(5 * time.Second)
//			c.WaitFor(5*time.Second, "x on the new leader", func() bool {
//				return c.Node(c.Leader()).FSM().(*kv.FSM).Get("x") == "1"
//			})
//			_ = f
//			c.CheckSafety()
//		})
//	}
package raftest
