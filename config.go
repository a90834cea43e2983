package raft

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config tunes a node. Start from DefaultConfig and set LocalID; NewRaft validates it with
// ValidateConfig and keeps a copy, so changing a Config after NewRaft has no effect.
type Config struct {
	// LocalID is this server's ID; it must match the ID in the cluster configuration.
	LocalID ServerID

	// HeartbeatTimeout is how long a follower goes without hearing from a leader before it
	// starts an election; the actual timeout is drawn at random from [HeartbeatTimeout,
	// 2*HeartbeatTimeout) each time. The leader sends heartbeats every HeartbeatTimeout/10.
	HeartbeatTimeout time.Duration

	// ElectionTimeout is how long a candidate waits for an election round to succeed before
	// starting another, again drawn from [ElectionTimeout, 2*ElectionTimeout).
	ElectionTimeout time.Duration

	// CommitTimeout is the longest a replication goroutine waits without new entries before it
	// sends an AppendEntries anyway, so followers learn the commit index promptly.
	CommitTimeout time.Duration

	// LeaderLeaseTimeout is how long a leader may go without hearing from a quorum before it
	// steps down (check-quorum). It must not exceed HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration

	// LogStoreTimeout bounds one local log write on the leader: a leader whose LogStore takes
	// longer steps down rather than heartbeating while every write times out.
	LogStoreTimeout time.Duration

	// MaxAppendEntries is the most entries the leader groups into one local write and sends
	// in one AppendEntries request. MaxAppendEntriesBytes bounds the same batches by size.
	MaxAppendEntries int

	// MaxEntryBytes is the largest entry Apply accepts, counting Data and Extensions. A
	// larger one fails at once with ErrEntryTooLarge and is not applied. Every entry within
	// it replicates, however many arrive at once: requests are cut by bytes, and one entry
	// always fits one request. It must fit the transport's message limit (see
	// MessageLimiter); NewRaft checks. Default DefaultMaxEntryBytes.
	MaxEntryBytes int

	// MaxAppendEntriesBytes bounds the entry bytes the leader groups into one local write and
	// sends in one AppendEntries request, next to MaxAppendEntries; a request holds at least
	// one entry, so an entry larger than this travels alone. It must fit the transport's
	// message limit. Default DefaultMaxAppendEntriesBytes.
	MaxAppendEntriesBytes int

	// MaxInflightBytes bounds the entry bytes the leader has sent to one follower and not
	// yet heard back about (the pipeline window): what a follower far behind costs both
	// sides in memory. It must be at least MaxAppendEntriesBytes. The leader also stops
	// taking applies while four times this many bytes are not committed yet, so a slow
	// quorum slows clients down instead of growing the leader's memory. Default
	// DefaultMaxInflightBytes.
	MaxInflightBytes int

	// BatchApplyCh gives the apply queue a buffer of MaxAppendEntries so that concurrent
	// Apply calls queue without waiting on the main loop; on by default.
	BatchApplyCh bool

	// PreVoteDisabled turns off the pre-vote phase (Ongaro's thesis, section 9.6). Pre-vote
	// stops a node that was partitioned away from disrupting the cluster when it returns.
	PreVoteDisabled bool

	// EmptyStartVotes lets a node that starts with no state at all (no term, vote, log or
	// snapshot, and not bootstrapped) vote, pre-vote and campaign at once. By default such a
	// node does none of these until a leader has brought its log up to date (see
	// docs/design.md, "A node that starts without state"): it cannot tell a first start from
	// a data directory that was wiped or lost, and a voter restarted in place with an empty
	// directory would otherwise help elect a leader that lacks entries it acknowledged.
	//
	// The default has one cost: a new cluster where a single server is bootstrapped with a
	// configuration listing others that start empty never elects a leader, since the empty
	// servers refuse their votes. Bootstrap every initial server with the same configuration
	// instead (as raftkv and raftest do), or one server with itself alone and add the others
	// with AddVoter. Set this only on servers whose storage is never lost, for the
	// hashicorp/raft pattern of bootstrapping one server with the whole list.
	EmptyStartVotes bool

	// TrailingLogs is how many entries stay in the log after a snapshot, so that slightly
	// lagging followers catch up from the log rather than by InstallSnapshot.
	TrailingLogs uint64

	// SnapshotThreshold is how many entries must be applied since the last snapshot before
	// the snapshot goroutine takes another one.
	SnapshotThreshold uint64

	// SnapshotInterval is how often (with random jitter up to the same again) the snapshot
	// goroutine checks SnapshotThreshold.
	SnapshotInterval time.Duration

	// NoSnapshotRestoreOnStart skips restoring the newest snapshot into the FSM at start-up,
	// for FSMs that persist their own state.
	NoSnapshotRestoreOnStart bool

	// NotifyCh, if set, receives true when this node becomes leader and false when it stops
	// being leader. Sends never block: give it a buffer, or values are dropped.
	NotifyCh chan<- bool

	// Logger receives the node's logs; nil means a default hclog logger at Info level.
	Logger hclog.Logger

	// LeaseReads makes ReadIndex and ReadIndexContext on this node accept an answer from the
	// leader's lease (see WithLease, which overrides it per call): while a quorum of voters
	// acknowledged a heartbeat the leader sent less than HeartbeatTimeout - MaxClockDrift
	// ago, the leader answers a read without a confirmation round. Off by default: it trades
	// a round trip for an assumption about clocks (see MaxClockDrift).
	LeaseReads bool

	// MaxClockDrift bounds how far the monotonic clocks of any two nodes may drift apart over
	// one HeartbeatTimeout; lease reads subtract it from the lease. The assumption a lease
	// rests on: a follower that acknowledged the leader's heartbeat refuses to vote for
	// anyone else for HeartbeatTimeout measured on its own clock, and the leader counts the
	// same span on its clock, minus MaxClockDrift, from the moment it sent that heartbeat. If
	// a follower's clock runs faster than the leader's by more than MaxClockDrift over one
	// HeartbeatTimeout (a VM paused and resumed with a jumped monotonic clock, a broken
	// clock source), a new leader can be elected and commit writes while the old one still
	// serves lease reads, which then may miss those writes (stale reads). Confirmation-round
	// reads never depend on clocks. Zero means HeartbeatTimeout/10; it must be below
	// HeartbeatTimeout/2.
	MaxClockDrift time.Duration

	// ProtocolVersion is the wire protocol version this node's requests carry, in
	// [ProtocolVersionMin, ProtocolVersionMax]; zero means ProtocolVersionMax. A node accepts
	// requests in any version of its build's range whatever this says. During a rolling
	// upgrade to a release with a higher ProtocolVersionMax, set it to the version every
	// node of the cluster speaks until all run the new release (docs/compatibility.md).
	ProtocolVersion int

	// protocolMin and protocolMax, when set, replace the build's range; tests set them to
	// play nodes of other releases (export_test.go).
	protocolMin, protocolMax int

	// RandSeed seeds the node's random source (election timeouts). Zero picks a random seed;
	// tests set it to replay a run.
	RandSeed int64
}

// Defaults of the limits on the write path.
const (
	// DefaultMaxAppendEntries is the default MaxAppendEntries. Batches take what is queued,
	// so at low load they hold one entry and add no latency; under load they grow up to this
	// many entries or DefaultMaxAppendEntriesBytes, whichever comes first.
	DefaultMaxAppendEntries = maxAppendEntriesLimit

	// DefaultMaxEntryBytes is the default MaxEntryBytes: a 1 MiB value with its key and an
	// application's encoding around it fits with room to spare.
	DefaultMaxEntryBytes = 2 << 20

	// DefaultMaxAppendEntriesBytes is the default MaxAppendEntriesBytes: large enough that
	// 4 KiB commands still travel 256 to a request, small enough that a follower decodes and
	// stores one request in a few milliseconds.
	DefaultMaxAppendEntriesBytes = 1 << 20

	// DefaultMaxInflightBytes is the default MaxInflightBytes: a few requests per follower.
	DefaultMaxInflightBytes = 8 << 20
)

// DefaultConfig returns a Config with production defaults. LocalID is left empty.
func DefaultConfig() *Config {
	return &Config{
		HeartbeatTimeout:      1000 * time.Millisecond,
		ElectionTimeout:       1000 * time.Millisecond,
		CommitTimeout:         50 * time.Millisecond,
		LeaderLeaseTimeout:    500 * time.Millisecond,
		LogStoreTimeout:       5 * time.Second,
		MaxAppendEntries:      DefaultMaxAppendEntries,
		MaxEntryBytes:         DefaultMaxEntryBytes,
		MaxAppendEntriesBytes: DefaultMaxAppendEntriesBytes,
		MaxInflightBytes:      DefaultMaxInflightBytes,
		BatchApplyCh:          true,
		TrailingLogs:          10240,
		SnapshotThreshold:     8192,
		SnapshotInterval:      120 * time.Second,
		ProtocolVersion:       ProtocolVersionMax,
	}
}

// protocolRange returns the protocol versions c's node speaks and the one it sends.
func (c *Config) protocolRange() (send, lo, hi int) {
	lo, hi = ProtocolVersionMin, ProtocolVersionMax
	if c.protocolMin != 0 || c.protocolMax != 0 {
		lo, hi = c.protocolMin, c.protocolMax
	}
	send = c.ProtocolVersion
	if send == 0 {
		send = hi
	}
	return send, lo, hi
}

// maxAppendEntriesLimit caps MaxAppendEntries so one request stays a sane size.
const maxAppendEntriesLimit = 1024

// ValidateConfig reports the first problem with c. Every error wraps ErrInvalidConfig.
func ValidateConfig(c *Config) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c == nil:
		return bad("nil config")
	case c.LocalID == "":
		return bad("LocalID is empty")
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return bad("HeartbeatTimeout %v is below 5ms", c.HeartbeatTimeout)
	case c.ElectionTimeout < 5*time.Millisecond:
		return bad("ElectionTimeout %v is below 5ms", c.ElectionTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return bad("ElectionTimeout %v is below HeartbeatTimeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.CommitTimeout < time.Millisecond:
		return bad("CommitTimeout %v is below 1ms", c.CommitTimeout)
	case c.LeaderLeaseTimeout < 5*time.Millisecond:
		return bad("LeaderLeaseTimeout %v is below 5ms", c.LeaderLeaseTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return bad("LeaderLeaseTimeout %v is above HeartbeatTimeout %v: a deposed leader could outlive its lease", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.LogStoreTimeout <= 0:
		return bad("LogStoreTimeout %v must be positive", c.LogStoreTimeout)
	case c.MaxAppendEntries <= 0 || c.MaxAppendEntries > maxAppendEntriesLimit:
		return bad("MaxAppendEntries %d is outside [1, %d]", c.MaxAppendEntries, maxAppendEntriesLimit)
	case c.MaxEntryBytes <= 0:
		return bad("MaxEntryBytes %d must be positive", c.MaxEntryBytes)
	case c.MaxAppendEntriesBytes <= 0:
		return bad("MaxAppendEntriesBytes %d must be positive", c.MaxAppendEntriesBytes)
	case c.MaxInflightBytes < c.MaxAppendEntriesBytes:
		return bad("MaxInflightBytes %d is below MaxAppendEntriesBytes %d: the window must hold a full request", c.MaxInflightBytes, c.MaxAppendEntriesBytes)
	case c.SnapshotInterval < 5*time.Millisecond:
		return bad("SnapshotInterval %v is below 5ms", c.SnapshotInterval)
	case c.SnapshotThreshold == 0:
		return bad("SnapshotThreshold is zero")
	case c.MaxClockDrift < 0 || c.MaxClockDrift >= c.HeartbeatTimeout/2:
		return bad("MaxClockDrift %v is outside [0, HeartbeatTimeout/2)", c.MaxClockDrift)
	}
	if send, lo, hi := c.protocolRange(); lo < 1 || send < lo || send > hi {
		return bad("ProtocolVersion %d is outside [%d, %d], the versions this build speaks", send, lo, hi)
	}
	return nil
}

// validateForTransport checks that the byte limits of c fit in one message of trans, with
// their encoding overhead: the largest entry alone, and a full request.
func validateForTransport(c *Config, trans Transport) error {
	limiter, ok := trans.(MessageLimiter)
	if !ok {
		return nil
	}
	limit := limiter.MaxMessageBytes()
	overhead := appendOverheadBytes(c.LocalID, trans.LocalAddr())
	if need := c.MaxEntryBytes + logOverheadBytes + overhead; need > limit {
		return fmt.Errorf("%w: MaxEntryBytes %d needs %d-byte messages, the transport carries at most %d",
			ErrInvalidConfig, c.MaxEntryBytes, need, limit)
	}
	if need := c.MaxAppendEntriesBytes + overhead; need > limit {
		return fmt.Errorf("%w: MaxAppendEntriesBytes %d needs %d-byte messages, the transport carries at most %d",
			ErrInvalidConfig, c.MaxAppendEntriesBytes, need, limit)
	}
	return nil
}
