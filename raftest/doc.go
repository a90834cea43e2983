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
// Real parts plug in too. Options.NewTransport gives nodes any raft.Transport (TCP on
// loopback, say); their addresses then come from the transports, a restarted node must come
// back at its address, and the fault methods above fail the test, since only the in-memory
// network can inject faults. Options.OpenStores opens durable stores (wal) at every start and
// closes them on Crash, so a restart recovers from what is on disk.
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
// Testing your own FSM: Example_testYourFSM (example_test.go) is a whole file to start from, a
// small FSM and a test that crashes the leader, cuts off a follower so no quorum is left,
// heals, restarts the crashed node and checks that every node converged. It is compiled by go
// test, and TestExample_RegisterSurvivesFaults runs it, so it stays correct.
package raftest
