//go:build unix

package main

import (
	"runtime"
	"syscall"
	"time"
)

// processUsage returns the process's CPU time so far (user + system) and its peak resident
// set size in bytes.
func processUsage() (time.Duration, uint64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	rss := uint64(ru.Maxrss)
	if runtime.GOOS != "darwin" {
		rss *= 1024 // kilobytes everywhere but macOS
	}
	return cpu, rss
}
