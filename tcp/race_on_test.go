//go:build race

package tcp_test

// raceEnabled reports whether the tests run under the race detector, which makes copying
// megabytes several times slower: the flow tests then use smaller entries (still far past the
// frame limit in total, so the wedge they guard against would still show).
const raceEnabled = true
