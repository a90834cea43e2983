package wal

import "errors"

// Sentinel errors. Every error the Store returns is one of these, wraps one of them, wraps
// raft.ErrLogNotFound, or wraps the underlying I/O error; test with errors.Is.
var (
	// ErrCorrupt is returned by Open when a segment holds damage that is not the torn tail of
	// an interrupted write, or the first-index marker or the stable file fails verification,
	// and by GetLog when a record read back does not verify. The message names the file and
	// the byte offset; the damaged bytes are left on disk. After GetLog found corruption the
	// store refuses every later write (ErrFailed wrapping the ErrCorrupt error).
	ErrCorrupt = errors.New("wal: corrupt data")

	// ErrLocked is returned by Open when another Store, in this process or another one, holds
	// the directory lock.
	ErrLocked = errors.New("wal: directory locked by another store")

	// ErrClosed is returned by every call made after Close.
	ErrClosed = errors.New("wal: store closed")

	// ErrFailed is returned by every write after a write, fsync or truncate failed. After a
	// failed fsync the state of the file on disk is unknown, so the store refuses further
	// writes rather than guess; reopen it to recover from what the disk holds.
	ErrFailed = errors.New("wal: store failed after an I/O error")

	// ErrOutOfOrder is returned by StoreLogs when the batch does not continue the log with
	// consecutive indexes. Nothing is written.
	ErrOutOfOrder = errors.New("wal: log indexes out of order")

	// ErrUnsupportedRange is returned by DeleteRange for a range that is neither a prefix nor
	// a suffix of the log; Raft never asks for one.
	ErrUnsupportedRange = errors.New("wal: delete range is neither a prefix nor a suffix")

	// ErrTooLarge is returned by StoreLogs for an entry whose data and extensions together
	// exceed MaxEntryBytes, and by Set for a stable value too large for the stable file.
	ErrTooLarge = errors.New("wal: entry too large")

	// ErrUnsupportedVersion is returned by Open when a segment carries a format version this
	// build does not read (a newer release wrote it). Nothing is changed on disk.
	ErrUnsupportedVersion = errors.New("wal: unsupported format version")

	// ErrInvalidOption is returned by Open for an option value out of range.
	ErrInvalidOption = errors.New("wal: invalid option")
)
