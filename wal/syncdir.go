package wal

import "github.com/raftkit/raft/internal/fsutil"

// syncDir fsyncs a directory so that file creations, renames and removals in it are durable
// (a no-op where directories cannot be fsynced).
func syncDir(dir string) error { return fsutil.SyncDir(dir) }
