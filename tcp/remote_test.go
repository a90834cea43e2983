package tcp

import (
	"net"
	"testing"
)

// noAddrConn is a connection from a custom stream layer that knows no remote address.
type noAddrConn struct{ net.Conn }

func (noAddrConn) RemoteAddr() net.Addr { return nil }

func TestRemoteName_ToleratesConnectionsWithoutRemoteAddress(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := remoteName(noAddrConn{a}); got != "unknown" {
		t.Fatalf("remoteName = %q, want unknown", got)
	}
	if got := remoteName(a); got == "" {
		t.Fatal("remoteName of a pipe is empty")
	}
}
