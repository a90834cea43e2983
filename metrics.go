package raft

import (
	"sync/atomic"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// Metrics go to go-metrics' global sink, which the embedding program configures. The names
// are listed in the README; peer and role are labels, never parts of a name.

var (
	metricApplyLatency    = []string{"raft", "client", "apply_latency"}
	metricCommitTime      = []string{"raft", "commit", "commit_time"}
	metricDispatchBatch   = []string{"raft", "leader", "dispatch_batch_size"}
	metricStoreLogsTime   = []string{"raft", "log", "store_logs_time"}
	metricStoreLogsBatch  = []string{"raft", "log", "store_logs_batch_size"}
	metricFSMApplyTime    = []string{"raft", "fsm", "apply_time"}
	metricFSMBatchSize    = []string{"raft", "fsm", "apply_batch_size"}
	metricFSMSnapshotTime = []string{"raft", "fsm", "snapshot_time"}
	metricFSMRestoreTime  = []string{"raft", "fsm", "restore_time"}
	metricRPCLatency      = []string{"raft", "replication", "rpc_latency"}
	metricRPCProcessTime  = []string{"raft", "rpc", "process_time"}
	metricRoleChange      = []string{"raft", "state", "role_change"}
	metricElection        = []string{"raft", "state", "election"}
	metricSnapshotPersist = []string{"raft", "snapshot", "persist_time"}
	metricSnapshotInstall = []string{"raft", "snapshot", "install_time"}
	metricReplicationLag  = []string{"raft", "replication", "lag_entries"}
	metricSnapshotSent    = []string{"raft", "snapshot", "send_bytes"}
	metricSnapshotSize    = []string{"raft", "snapshot", "send_size_bytes"}
	metricReads           = []string{"raft", "read", "reads"}
	metricReadApplyWait   = []string{"raft", "read", "apply_wait"}
	metricReadRounds      = []string{"raft", "read", "rounds"}
	metricReadRoundSize   = []string{"raft", "read", "round_size"}
	metricReadForwardSize = []string{"raft", "read", "forward_batch_size"}
)

// replicationLagMetric reports, on the leader, how many entries a peer is behind its log.
func replicationLagMetric(peer ServerID, lastIndex, matchIndex uint64) {
	lag := uint64(0)
	if lastIndex > matchIndex {
		lag = lastIndex - matchIndex
	}
	metrics.SetGaugeWithLabels(metricReplicationLag, float32(lag), []metrics.Label{{Name: "peer", Value: string(peer)}})
}

// snapshotProgressStep is how many bytes of a snapshot transfer pass between two progress
// reports: a report per read would cost a metrics call per 32 KiB chunk.
const snapshotProgressStep = 1 << 20

// snapshotProgress reports a snapshot transfer to a peer as two gauges: the bytes sent so far
// and the snapshot's size. Used by the one goroutine that streams the snapshot.
type snapshotProgress struct {
	labels                         []metrics.Label
	size, sentBytes, reportedBytes int64
}

func newSnapshotProgress(peer ServerID, size int64) *snapshotProgress {
	p := &snapshotProgress{labels: []metrics.Label{{Name: "peer", Value: string(peer)}}, size: size}
	metrics.SetGaugeWithLabels(metricSnapshotSize, float32(size), p.labels)
	metrics.SetGaugeWithLabels(metricSnapshotSent, 0, p.labels)
	return p
}

// sent records n more bytes on the wire; nil p records nothing.
func (p *snapshotProgress) sent(n int64) {
	if p == nil {
		return
	}
	p.sentBytes += n
	if p.sentBytes-p.reportedBytes >= snapshotProgressStep || p.sentBytes == p.size {
		p.reportedBytes = p.sentBytes
		metrics.SetGaugeWithLabels(metricSnapshotSent, float32(p.sentBytes), p.labels)
	}
}

// The stages of a leader's entry, from Apply to its answer. Queued is the wait in the apply
// queue until the leader gives the entry an index; written and committed both count from
// then (the local write and replication run in parallel): until the leader's own write is
// durable, and until a quorum holds the entry; applied counts from the commit until the FSM
// applied it and the future was answered. Queued + committed + applied is the whole latency.
var (
	stageQueued    = []string{"raft", "apply", "stage_queued"}
	stageWritten   = []string{"raft", "apply", "stage_written"}
	stageCommitted = []string{"raft", "apply", "stage_committed"}
	stageApplied   = []string{"raft", "apply", "stage_applied"}
)

// stageMetric records one entry's time in a stage.
func stageMetric(stage []string, from, to time.Time) {
	metrics.AddSample(stage, float32(to.Sub(from).Seconds()*1e3))
}

// readKindLabels are the labels of each read kind, made once: a read costs no allocation
// for its metrics.
var readKindLabels = [readKinds][]metrics.Label{
	readKindRound:         {{Name: "kind", Value: "leader_round"}},
	readKindLease:         {{Name: "kind", Value: "leader_lease"}},
	readKindFollower:      {{Name: "kind", Value: "follower"}},
	readKindFollowerLease: {{Name: "kind", Value: "follower_lease"}},
}

// readMetricsInterval is how often the read batcher reports the read counters.
const readMetricsInterval = time.Second

// readCounter counts successful reads by kind with atomics on the reading goroutines; the
// read batcher reports the counts to go-metrics (flush), one call per kind every
// readMetricsInterval and at shutdown. A go-metrics call per read (a lock, a label filter, a
// sink call) would cost a lease read more than the read itself.
type readCounter struct {
	counts   [readKinds]atomic.Uint64
	reported [readKinds]uint64 // flush only
}

func (c *readCounter) add(k readKind) { c.counts[k].Add(1) }

// flush reports the reads counted since the previous flush. One goroutine at a time.
func (c *readCounter) flush() {
	for k := range c.counts {
		n := c.counts[k].Load()
		if n != c.reported[k] {
			metrics.IncrCounterWithLabels(metricReads, float32(n-c.reported[k]), readKindLabels[k])
			c.reported[k] = n
		}
	}
}

// readApplyWaitMetric records how long a read waited for the local FSM to apply its index;
// reads that found it applied are not sampled.
func readApplyWaitMetric(k readKind, start time.Time) {
	metrics.MeasureSinceWithLabels(metricReadApplyWait, start, readKindLabels[k])
}

// readRoundMetric counts a leader confirmation round and the reads (local and forwarded
// batches) sharing it; rounds per read is the inverse of the size.
func readRoundMetric(size int) {
	metrics.IncrCounter(metricReadRounds, 1)
	metrics.AddSample(metricReadRoundSize, float32(size))
}

// readForwardMetric records how many reads one follower ReadIndex RPC carried.
func readForwardMetric(n int) { metrics.AddSample(metricReadForwardSize, float32(n)) }

func applyLatencyMetric(created time.Time) { metrics.MeasureSince(metricApplyLatency, created) }

func commitTimeMetric(dispatched time.Time) { metrics.MeasureSince(metricCommitTime, dispatched) }

func dispatchMetric(n int) { metrics.AddSample(metricDispatchBatch, float32(n)) }

func storeLogsMetric(start time.Time, n int) {
	metrics.MeasureSince(metricStoreLogsTime, start)
	metrics.AddSample(metricStoreLogsBatch, float32(n))
}

func fsmApplyMetric(start time.Time, n int) {
	metrics.MeasureSince(metricFSMApplyTime, start)
	metrics.AddSample(metricFSMBatchSize, float32(n))
}

func fsmSnapshotMetric(start time.Time) { metrics.MeasureSince(metricFSMSnapshotTime, start) }

func fsmRestoreMetric(start time.Time) { metrics.MeasureSince(metricFSMRestoreTime, start) }

func rpcMetric(rpc string, peer ServerID, start time.Time) {
	metrics.MeasureSinceWithLabels(metricRPCLatency, start,
		[]metrics.Label{{Name: "rpc", Value: rpc}, {Name: "peer", Value: string(peer)}})
}

func rpcProcessMetric(rpc string, start time.Time) {
	metrics.MeasureSinceWithLabels(metricRPCProcessTime, start, []metrics.Label{{Name: "rpc", Value: rpc}})
}

func roleChanged(s RaftState) {
	metrics.IncrCounterWithLabels(metricRoleChange, 1, []metrics.Label{{Name: "role", Value: s.String()}})
}

func electionMetric(preVote bool) {
	kind := "vote"
	if preVote {
		kind = "pre_vote"
	}
	metrics.IncrCounterWithLabels(metricElection, 1, []metrics.Label{{Name: "kind", Value: kind}})
}

func snapshotPersistMetric(start time.Time) { metrics.MeasureSince(metricSnapshotPersist, start) }

func snapshotInstallMetric(start time.Time) { metrics.MeasureSince(metricSnapshotInstall, start) }
