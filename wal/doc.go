// Package wal is a durable raft.LogStore and raft.StableStore that keeps the log in segment
// files and the stable values in one small file, all in a single directory.
//
//	s, err := wal.Open("/var/lib/node1/raft")
//	if err != nil { ... }      // ErrLocked, ErrCorrupt, or an I/O error
//	defer s.Close()
//	r, err := raft.NewRaft(conf, fsm, s, s, snaps, trans)
//
// # Guarantees
//
//   - StoreLogs writes the whole batch with one write and one fsync (group commit) and
//     returns only after both; an acknowledged batch survives a process or machine crash.
//   - After any crash the log is a prefix of what was written: every acknowledged batch,
//     possibly followed by part or all of the batch in flight; never a hole.
//   - Open verifies the CRC32C of every record. Only the torn tail of an interrupted write
//     is cut: damage at offset X of the last segment is cut at the end of the last good
//     record when (1) no intact record with a later index lies anywhere after X, so X is in
//     the last batch ever written, and (2) the damage looks like an interrupted write: the
//     file ends inside the record (and the bytes left are not a complete record with a
//     damaged length field), or the record holds a 512-byte sector of zeros. A cut is logged
//     at Warn and described by OpenReport. Any other damage (a flipped bit with intact
//     records after it, a complete record that fails its CRC, anything in a sealed segment,
//     the marker or the stable file) fails Open with ErrCorrupt naming the file and offset,
//     and the bytes are left on disk. With WithNoSync nothing is ever synced, so condition 1
//     is dropped for a zeroed sector: it is cut even with intact records after it. A record
//     that claims more bytes than the file holds, with an intact record after its header,
//     has a damaged length field and is ErrCorrupt with or without fsync. A segment with a
//     newer format version fails Open with
//     ErrUnsupportedVersion, also without touching it.
//   - GetLog re-verifies each record it reads from disk; a record that fails makes GetLog
//     return ErrCorrupt and the store refuse every later write (ErrFailed).
//   - GetLog never waits for an append or an fsync in progress: writers hold the index lock only to publish a finished write.
//   - Set and SetUint64 replace the stable file atomically and durably.
//   - A flock on LOCK keeps a second Store, in any process, out of the directory.
//   - A failed write, fsync or truncate makes the store refuse further writes (ErrFailed);
//     reopening recovers from what the disk holds.
//
// # Knobs
//
// WithSegmentSize (default 64 MiB), WithNoSync (fsync off: for tests, or when a lost tail
// after a power failure is acceptable), WithCacheEntries (recent entries served from memory,
// default 1024), WithLogger.
//
// # Directory
//
//	LOCK                          flock target, empty
//	00000000000000000001.wal      segment whose first record has index 1
//	00000000000000004711.wal      next segment, first record 4711
//	FIRST                         first-index marker (absent until the first compaction)
//	STABLE                        stable values (absent until the first Set)
//	*.tmp                         an atomic replace in progress; Open deletes leftovers
//
// A segment file is named by the index of its first record, in 20 decimal digits, with the
// suffix ".wal", so names sort in log order. Segments hold consecutive indexes, and each one
// starts right after the previous one ends. All integers are little-endian. CRC32C means the
// Castagnoli polynomial (hash/crc32.Castagnoli).
//
// # Segment file
//
// A 24-byte header, then records back to back with no padding:
//
//	offset size  header field
//	0      8     magic "RKWALSEG"
//	8      8     base index: index of the first record, equal to the file name
//	16     4     format version, 1
//	20     4     CRC32C of bytes 0..19
//
// A new segment is started, with its header and the first batch in one write, when the
// active one has reached the segment size; a segment may exceed it by at most one batch.
//
// # Record
//
//	offset size  field
//	0      4     CRC32C of every byte of the record after this field (28 + data + extensions)
//	4      4     data length D
//	8      4     extensions length E
//	12     1     raft.LogType
//	13     3     reserved, zero
//	16     8     index
//	24     8     term
//	32     D     data
//	32+D   E     extensions
//
// A reader rejects a record whose reserved bytes are not zero, whose D+E exceeds
// MaxEntryBytes (1 GiB) or the bytes left in the file, whose CRC does not match, or whose
// index is not the previous one plus one (the first record of a segment has the base index).
// Lengths are checked against the file size before anything is read, and Open streams each
// record through the CRC, so a corrupt length never causes a large allocation.
//
// # First-index marker and stable file
//
// Both are written by the same atomic replace: write NAME.tmp, fsync it, rename it over NAME,
// fsync the directory. Their last 4 bytes are the CRC32C of everything before them.
//
//	FIRST:  magic "RKWALFST" (8) | first index (8) | CRC32C (4)
//	STABLE: magic "RKWALSTB" (8) | count N (4) | N x (key length K (4) | value length V (4) |
//	        key (K) | value (V)) | CRC32C (4)
//
// Stable keys are unique and sorted bytewise; SetUint64 stores 8 big-endian bytes. Each file
// is at most 16 MiB.
//
// Records with an index below the marker are deleted: the first index of the log is the
// larger of the marker and the first segment's base. Head deletion (compaction) writes the
// marker first and then deletes the segments that lie wholly below it; Open finishes an
// interrupted compaction by deleting such segments. When the whole log is deleted the marker
// is set past it and every segment deleted; the next StoreLogs, which may start at any index,
// first deletes any segment file still on disk (one whose removal failed) and fsyncs the
// directory, then lowers the marker if it lies above the new first index.
//
// Tail deletion (a follower's conflict truncation) deletes the later segments newest first,
// fsyncing the directory after each, then truncates the segment that keeps the new last
// entry right after that record and fsyncs it; appends continue in that segment.
//
// # Memory
//
// The index keeps one 8-byte file offset per entry, plus the cache of recent entries, which
// shares the buffers the batches were encoded into (batches over 8 MiB are not cached). Every
// segment file stays open.
package wal
