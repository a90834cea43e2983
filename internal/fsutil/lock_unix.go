//go:build unix

package fsutil

import (
	"errors"
	"os"
	"syscall"
)

// LockFile takes an exclusive, non-blocking flock on path, creating the file if needed. The
// lock belongs to the returned file and goes away when it is closed or the process dies, so a
// crash never leaves a stale lock. flock locks belong to the open file description, so a
// second LockFile in the same process conflicts too. A lock held elsewhere returns ErrLocked.
func LockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, err
	}
	return f, nil
}
