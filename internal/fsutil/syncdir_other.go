//go:build !unix

package fsutil

// SyncDir does nothing on platforms outside the unix family (Windows, Plan 9, wasm): Go
// cannot open a directory there in a way that lets it be fsynced, and on Windows NTFS makes
// metadata changes (create, rename, delete) durable through its own journal. The durable
// stores document this: their crash guarantees for file creation, rename and removal rest on
// the platform there, not on an explicit directory fsync.
func SyncDir(string) error { return nil }
