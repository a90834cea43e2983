package storetest

import "testing"

// Option adjusts a conformance run.
type Option func(*config)

type config struct {
	skips map[string]string // case name -> reason
}

// SkipCase skips the named case with t.Skip, printing reason. It is meant for a known, tracked
// gap in a store, never to hide a failure nobody has looked at.
func SkipCase(name, reason string) Option {
	return func(c *config) { c.skips[name] = reason }
}

func newConfig(opts []Option) *config {
	c := &config{skips: map[string]string{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// run runs one case as a subtest unless it is skipped.
func (c *config) run(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		if reason, ok := c.skips[name]; ok {
			t.Skip(reason)
		}
		f(t)
	})
}

// namedCase is one conformance case for a store of type S.
type namedCase[S any] struct {
	name string
	run  func(t *testing.T, s S)
}

// runCases runs each case as a subtest on a new store.
func runCases[S any](t *testing.T, c *config, newStore func(t *testing.T) S, cases []namedCase[S]) {
	t.Helper()
	for _, tc := range cases {
		c.run(t, tc.name, func(t *testing.T) { tc.run(t, newStore(t)) })
	}
}
