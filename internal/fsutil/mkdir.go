package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// MkdirAll creates dir and any missing parents, like os.MkdirAll, and then fsyncs the parent
// of every directory it created, so that a crash right after cannot lose the new directory
// (and with it every file the store goes on to write and fsync inside it).
func MkdirAll(dir string, perm fs.FileMode) error {
	return mkdirAll(dir, perm, SyncDir)
}

// mkdirAll is MkdirAll with the directory fsync passed in, so tests can see the calls.
func mkdirAll(dir string, perm fs.FileMode, syncDir func(string) error) error {
	dir = filepath.Clean(dir)
	var created []string // deepest first
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	// Outermost first: each new directory's entry lives in its parent.
	for i := len(created) - 1; i >= 0; i-- {
		if err := syncDir(filepath.Dir(created[i])); err != nil {
			return err
		}
	}
	return nil
}
