// Package testnet holds network helpers shared by tests of several packages: free loopback
// addresses and a throwaway certificate authority for TLS.
package testnet

import (
	"net"
	"testing"
)

// FreeLoopbackAddrs returns n loopback addresses that were free a moment ago. Another process
// may still take one before the caller binds it; callers that start servers detect that and
// retry.
func FreeLoopbackAddrs(t testing.TB, n int) []string {
	t.Helper()
	lns := make([]net.Listener, 0, n)
	addrs := make([]string, 0, n)
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}
