//go:build !race

package tcp_test

// raceEnabled: see race_on_test.go.
const raceEnabled = false
