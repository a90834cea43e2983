//go:build unix

package fsutil

import "os"

// SyncDir fsyncs a directory, so that file creations, renames and removals in it survive a
// crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
