//go:build !unix

package wal

import (
	"os"
	"path/filepath"
)

// lockFileName is the file whose lock would guard the directory.
const lockFileName = "LOCK"

// lockDir only creates dir/LOCK: on platforms without flock the store does not stop a second
// process from opening the directory. The package is built and tested on unix.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, lockFileName), os.O_CREATE|os.O_RDWR, 0o644)
}
