package kv

import (
	"net"
	"strings"
	"testing"
)

// TestAdvertised checks which address a node announces for what it was configured with: the
// spelling kept (names stay names), the bound port filled in for port 0, wildcards refused.
func TestAdvertised(t *testing.T) {
	bound := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41234}
	for _, c := range []struct{ configured, want string }{
		{"localhost:7000", "localhost:7000"},
		{"node1:7101", "node1:7101"},
		{"127.0.0.1:7000", "127.0.0.1:7000"},
		{"[::1]:7000", "[::1]:7000"},
		{"localhost:0", "localhost:41234"},
		{"127.0.0.1:0", "127.0.0.1:41234"},
	} {
		if got, err := advertised(c.configured, bound); err != nil || got != c.want {
			t.Errorf("advertised(%q) = %q, %v; want %q", c.configured, got, err, c.want)
		}
	}
	for _, bad := range []string{"0.0.0.0:7000", "[::]:7000", ":7000", ":0", "node1"} {
		if got, err := advertised(bad, bound); err == nil {
			t.Errorf("advertised(%q) = %q, want an error", bad, got)
		}
	}
}

// TestProbeLayer_AdvertisesTheNameItWasGiven checks that the raft port is announced under the
// configured host name, not the IP it was bound to.
func TestProbeLayer_AdvertisesTheNameItWasGiven(t *testing.T) {
	l, err := newProbeLayer("localhost:0", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if addr := l.Addr().String(); !strings.HasPrefix(addr, "localhost:") || addr == "localhost:0" {
		t.Fatalf("Addr() = %q, want localhost:<bound port>", addr)
	}
	if _, err := newProbeLayer("0.0.0.0:0", nil, nil); err == nil || !strings.Contains(err.Error(), "wildcard") {
		t.Fatalf("a wildcard raft address: err = %v, want it refused as a wildcard", err)
	}
}
