//go:build !unix

package main

import "time"

// processUsage is not available on this platform: CPU and peak RSS are reported as zero.
func processUsage() (time.Duration, uint64) { return 0, 0 }
