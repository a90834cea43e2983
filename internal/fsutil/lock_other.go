//go:build !unix

package fsutil

import "os"

// LockFile only creates path on platforms without flock: nothing stops a second process
// from using the same directory there. The stores document this.
func LockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
}
