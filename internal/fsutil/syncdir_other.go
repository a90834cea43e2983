//go:build !unix

package fsutil

// SyncDir does nothing where directories cannot be fsynced.
func SyncDir(string) error { return nil }
