package fsutil

import "errors"

// ErrLocked is returned by LockFile when another open file holds the lock.
var ErrLocked = errors.New("fsutil: file locked")
