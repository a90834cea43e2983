package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/raftkit/raft/internal/fsutil"
)

// lockFileName is the file whose flock guards the directory.
const lockFileName = "LOCK"

// lockDir takes an exclusive, non-blocking flock on dir/LOCK (see fsutil.LockFile: released
// when the file is closed or the process dies; a second Open in the same process conflicts
// too). On platforms without flock nothing stops a second process.
func lockDir(dir string) (*os.File, error) {
	f, err := fsutil.LockFile(filepath.Join(dir, lockFileName))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("wal: lock %s: %w", dir, err)
	}
	return f, nil
}
