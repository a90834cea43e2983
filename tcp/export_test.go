package tcp

import (
	"crypto/tls"
	"fmt"
	"testing"
)

// MutualTLSConfigs gives the tests of package tcp_test n mutual-TLS configurations, each
// presenting its own certificate for 127.0.0.1 issued by one fresh CA and requiring the same
// of its peers.
func MutualTLSConfigs(t *testing.T, n int) []*tls.Config {
	t.Helper()
	ca := newTestCA(t, "cluster")
	confs := make([]*tls.Config, n)
	for i := range confs {
		confs[i] = mutualTLS(ca, ca.issue(t, fmt.Sprintf("node-%d", i)))
	}
	return confs
}
