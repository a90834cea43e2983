// Package raftest runs whole raftkit clusters inside a test, with faults, and checks that they
// stay safe. Use it to test the library, and to test your own FSM against crashes, partitions
// and leader changes.
//
// A Cluster is N nodes over one memnet.Network (package raftest/memnet). Every message between nodes is encoded and
// decoded with the real msgpack codec, so nodes never share memory. The network can partition
// nodes (Partition, Isolate, Heal), cut single directions (Cluster.Net.Cut), and drop, delay
// and duplicate messages at random (Cluster.Net.SetFaults, SetDefaultFaults). Nodes can be
// crashed and restarted (Crash, Start, Restart), brought back with their disk lost (Wipe),
// made to crash themselves inside a chosen operation (CrashAt), and given a slow, stalling
// disk (SetDiskFaults) or a slow FSM (SetFSMFaults).
//
// # What a crash means
//
// A crash is not a shutdown. Crash kills the node's current run (its Incarnation) at once,
// wherever its goroutines are, and waits for nothing in flight: a log write, an FSM apply or
// restore, a snapshot being persisted, an InstallSnapshot being received, a leader's Restore.
// The node's stores then hold exactly what a disk would:
//
//   - a log write is durable once StoreLogs returned; a crash inside StoreLogs keeps a seeded
//     prefix of the batch, possibly none of it;
//   - a DeleteRange (compaction, truncation) or a StableStore set (term, vote) in progress
//     leaves the state before or after it;
//   - a snapshot exists once its sink's Close returned; one still being written never does,
//     and a crash inside Close leaves it or not.
//
// The old incarnation never acts again: nothing it sends afterwards is delivered, nothing
// reaches it, its FSM applies nothing more and every call it makes into its stores fails with
// ErrCrashed, so the stores can be handed to the next incarnation untouched. Its goroutines
// are not stopped; like the stale goroutines of a real node they run on until they notice the
// errors and stop. Start builds a new incarnation over the same stores and a fresh FSM (from
// Options.NewFSM), which recovers from what the stores hold.
//
// CrashAt(i, p, n) makes node i crash itself inside its (n+1)-th next operation p: StoreLogs,
// DeleteRange, StableStore sets, snapshot writes and closes, FSM Apply and Restore, or the
// handling of an InstallSnapshot. Together these cover the leader's and the followers' log
// writes, log compaction, snapshot Persist, InstallSnapshot on the receiver and Restore on
// the leader. The node's Running then turns false; Start restarts it.
//
// The same crash model is available for any stores, FSM and transport outside a Cluster:
// wrap them with NewIncarnation's LogStore, StableStore, SnapshotStore, FSM and Transport,
// build the raft.Raft from the wrappers, and call Crash.
//
// Real parts plug in too. Options.NewTransport gives nodes any raft.Transport (TCP on
// loopback, say); their addresses then come from the transports, a restarted node must come
// back at its address, and the fault methods above fail the test, since only the in-memory
// network can inject faults. Options.OpenStores opens durable stores (wal) at every start and
// closes them on Crash (after fencing them off, so nothing reaches them once the crash
// happened), so a restart recovers from what is on disk.
//
// Every random decision of a run comes from one seed (Options.Seed, or RAFTEST_SEED from the
// environment, or a fresh one), printed together with the node logs when the test fails. A
// test that hangs until the go test timeout never gets to print it, so raftest prints the seed
// of every cluster still running a few seconds before the timeout (to standard error), with
// the goroutines of synctest bubbles that are not durably blocked: those are what keeps a hung
// bubble's virtual time from advancing.
//
// While the cluster runs, a checker watches two safety properties: at most one leader per
// term (taken from the leader observation each node fires as it becomes leader, with the term
// it won), and every node (and every incarnation of a node) applying the same entry at each
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
