// Package fsutil holds the file-system helpers that the durable stores (the file snapshot
// store and wal) share.
package fsutil
