package tcp

import (
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

// Defaults applied to zero fields of Options.
const (
	// DefaultMaxPool is the default number of idle connections kept per peer.
	DefaultMaxPool = 3

	// DefaultTimeout is the default per-request I/O timeout.
	DefaultTimeout = 10 * time.Second

	// DefaultIdleTimeout is the default time an inbound connection may stay silent between
	// frames.
	DefaultIdleTimeout = 5 * time.Minute

	// DefaultMaxFrameBytes is the default frame length limit. raft keeps every AppendEntries
	// within raft.Config.MaxAppendEntriesBytes (1 MiB by default), or one entry of at most
	// MaxEntryBytes (2 MiB by default), and NewRaft refuses limits that would not fit the
	// frame limit (Transport.MaxMessageBytes); 8 MiB leaves room to raise them.
	DefaultMaxFrameBytes = 8 << 20

	// DefaultMaxInboundConns is the default limit on open inbound connections.
	DefaultMaxInboundConns = 256

	// DefaultMaxPipelineInflight is the default pipeline window.
	DefaultMaxPipelineInflight = 64

	// DefaultSnapshotMinBytesPerSecond is the default slowest snapshot transfer rate that is
	// still tolerated: 1 MiB/s.
	DefaultSnapshotMinBytesPerSecond = 1 << 20

	// minFrameBytes keeps MaxFrameBytes large enough for every fixed-size message.
	minFrameBytes = 4 << 10
)

// Options tunes a Transport. The zero value of each field selects its default.
type Options struct {
	// MaxPool is how many idle connections per peer are kept for reuse. Heartbeats keep one
	// more connection per peer of their own. Default DefaultMaxPool.
	MaxPool int

	// Timeout bounds every outgoing request from dial to response (an InstallSnapshot gets
	// more, see SnapshotMinBytesPerSecond). On the receiving side it bounds how long a peer
	// may take to deliver a frame once its first byte arrived, how long a new connection
	// may wait before its first frame, and how long writing a response may take.
	// Default DefaultTimeout.
	Timeout time.Duration

	// IdleTimeout closes an inbound connection that sent no frame for this long. Pooled
	// outgoing connections idle for more than half of it are not reused, so the two sides
	// agree. Default DefaultIdleTimeout.
	IdleTimeout time.Duration

	// Logger receives the transport's logs. Default: an hclog logger named "raft-tcp" on
	// stderr at Info.
	Logger hclog.Logger

	// MaxFrameBytes is the largest frame body accepted or sent; a peer sending a larger one
	// is disconnected. Every peer of a cluster should use the same value. At most 4 GiB - 1.
	// Default DefaultMaxFrameBytes.
	MaxFrameBytes int

	// MaxInboundConns limits open inbound connections; more are closed as soon as they are
	// accepted. Default DefaultMaxInboundConns.
	MaxInboundConns int

	// MaxPipelineInflight is how many AppendEntries a pipeline keeps in flight before
	// AppendEntries blocks. Default DefaultMaxPipelineInflight.
	MaxPipelineInflight int

	// SnapshotMinBytesPerSecond is the slowest snapshot transfer tolerated: an
	// InstallSnapshot of n bytes gets Timeout + n/SnapshotMinBytesPerSecond seconds on
	// both sides. Default DefaultSnapshotMinBytesPerSecond.
	SnapshotMinBytesPerSecond int64
}

// withDefaults validates o and returns a copy with zero fields set to their defaults. Errors
// wrap raft.ErrInvalidConfig.
func (o Options) withDefaults() (Options, error) {
	if o.MaxPool < 0 || o.Timeout < 0 || o.IdleTimeout < 0 || o.MaxFrameBytes < 0 ||
		o.MaxInboundConns < 0 || o.MaxPipelineInflight < 0 || o.SnapshotMinBytesPerSecond < 0 {
		return o, fmt.Errorf("%w: tcp options must not be negative", raft.ErrInvalidConfig)
	}
	setDefault(&o.MaxPool, DefaultMaxPool)
	setDefault(&o.Timeout, DefaultTimeout)
	setDefault(&o.IdleTimeout, DefaultIdleTimeout)
	setDefault(&o.MaxFrameBytes, DefaultMaxFrameBytes)
	setDefault(&o.MaxInboundConns, DefaultMaxInboundConns)
	setDefault(&o.MaxPipelineInflight, DefaultMaxPipelineInflight)
	setDefault(&o.SnapshotMinBytesPerSecond, DefaultSnapshotMinBytesPerSecond)
	if o.MaxFrameBytes < minFrameBytes || int64(o.MaxFrameBytes) > math.MaxUint32 {
		return o, fmt.Errorf("%w: tcp MaxFrameBytes must be in [%d, %d]", raft.ErrInvalidConfig,
			minFrameBytes, uint32(math.MaxUint32))
	}
	if o.Logger == nil {
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft-tcp"})
	}
	return o, nil
}

// setDefault replaces a zero *v with def.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// maxSnapshotBudget caps the time granted to one snapshot transfer, so a size near MaxInt64
// cannot overflow a time.Duration.
const maxSnapshotBudget = 24 * time.Hour

// snapshotDeadline is how long transferring a snapshot of size bytes may take: Timeout plus
// size at the slowest tolerated rate, capped at maxSnapshotBudget.
func (o *Options) snapshotDeadline(now time.Time, size int64) time.Time {
	secs := size / o.SnapshotMinBytesPerSecond
	budget := maxSnapshotBudget
	if secs < int64(maxSnapshotBudget/time.Second) {
		frac := size % o.SnapshotMinBytesPerSecond
		budget = time.Duration(secs)*time.Second +
			time.Duration(float64(frac)/float64(o.SnapshotMinBytesPerSecond)*float64(time.Second))
	}
	return now.Add(o.Timeout + budget)
}
