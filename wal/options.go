package wal

import (
	"fmt"

	"github.com/hashicorp/go-hclog"
)

// Defaults for the options.
const (
	// DefaultSegmentBytes is the size past which the active segment is sealed and a new one
	// started.
	DefaultSegmentBytes = 64 << 20

	// DefaultCacheEntries is how many recently appended entries GetLog serves from memory.
	DefaultCacheEntries = 1024

	// minSegmentBytes keeps tests able to force many small segments while refusing values
	// that would make every batch its own file.
	minSegmentBytes = 1 << 10
)

// Option configures a Store at Open.
type Option func(*options)

type options struct {
	noSync       bool
	segmentBytes int64
	cacheEntries int
	logger       hclog.Logger
}

func defaultOptions() options {
	return options{
		segmentBytes: DefaultSegmentBytes,
		cacheEntries: DefaultCacheEntries,
		logger:       hclog.NewNullLogger(),
	}
}

// WithNoSync turns off every fsync. A process crash still loses nothing that the kernel
// accepted, but a machine crash or power loss may lose or tear acknowledged entries (Open then
// cuts the torn tail). Meant for tests and for users who accept that risk.
func WithNoSync() Option {
	return func(o *options) { o.noSync = true }
}

// WithSegmentSize sets the size in bytes past which the active segment is sealed and the next
// batch starts a new segment file (default DefaultSegmentBytes, at least 1 KiB). A segment may
// exceed it by at most one batch. Head compaction frees space one whole segment at a time.
func WithSegmentSize(bytes int64) Option {
	return func(o *options) { o.segmentBytes = bytes }
}

// WithCacheEntries sets how many of the most recently appended entries GetLog serves from
// memory without a read (default DefaultCacheEntries; 0 turns the cache off).
func WithCacheEntries(n int) Option {
	return func(o *options) { o.cacheEntries = n }
}

// WithLogger sets the logger for what Open repairs and for I/O failures (default: discard).
func WithLogger(logger hclog.Logger) Option {
	return func(o *options) { o.logger = logger }
}

func (o *options) validate() error {
	if o.segmentBytes < minSegmentBytes {
		return fmt.Errorf("%w: segment size %d below %d bytes", ErrInvalidOption, o.segmentBytes, minSegmentBytes)
	}
	if o.cacheEntries < 0 {
		return fmt.Errorf("%w: negative cache size %d", ErrInvalidOption, o.cacheEntries)
	}
	if o.logger == nil {
		return fmt.Errorf("%w: nil logger", ErrInvalidOption)
	}
	return nil
}
