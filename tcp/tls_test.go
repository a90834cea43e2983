package tcp

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/internal/testnet"
)

// testCA is a certificate authority generated for one test.
type testCA struct{ *testnet.CA }

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	ca, err := testnet.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca}
}

// issue returns a certificate for 127.0.0.1 usable as both server and client.
func (ca testCA) issue(t *testing.T, name string) tls.Certificate {
	t.Helper()
	leaf, err := ca.Issue(name)
	if err != nil {
		t.Fatal(err)
	}
	return leaf.TLS
}

// mutualTLS returns a config presenting certs and requiring peers signed by ca.
func mutualTLS(ca testCA, certs ...tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: certs,
		RootCAs:      ca.Pool,
		ClientCAs:    ca.Pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

func newTLSTestTransport(t *testing.T, conf *tls.Config) (*Transport, *logBuffer) {
	t.Helper()
	logger, logs := testLogger(t.Name())
	trans, err := NewTLSTransport("127.0.0.1:0", nil, conf, Options{Logger: logger, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trans.Close() })
	return trans, logs
}

// TestTLSTransport_MutualTLSRoundTrip runs requests of every size class between two nodes
// holding certificates of the cluster CA.
func TestTLSTransport_MutualTLSRoundTrip(t *testing.T) {
	ca := newTestCA(t, "cluster")
	server, _ := newTLSTestTransport(t, mutualTLS(ca, ca.issue(t, "a")))
	client, _ := newTLSTestTransport(t, mutualTLS(ca, ca.issue(t, "b")))
	startNode(t, server, nil)
	mustAppend(t, client, server, appendReq(1, 0, 0, 0))
	mustAppend(t, client, server, appendReq(1, 0, 64, 4096))
	p, err := client.AppendEntriesPipeline("a", server.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pipeSend(t, p, 0, 10)
	pipeCollect(t, p, 0, 10)
}

// TestTLSTransport_RefusesPeerWithoutValidClientCert dials with no client certificate and
// with one from another CA: both are refused, the node sees nothing, and the legitimate peer
// is still served.
func TestTLSTransport_RefusesPeerWithoutValidClientCert(t *testing.T) {
	ca, rogue := newTestCA(t, "cluster"), newTestCA(t, "rogue")
	server, logs := newTLSTestTransport(t, mutualTLS(ca, ca.issue(t, "a")))
	node := startNode(t, server, nil)
	good, _ := newTLSTestTransport(t, mutualTLS(ca, ca.issue(t, "b")))
	noCert, _ := newTLSTestTransport(t, &tls.Config{RootCAs: ca.Pool, Certificates: nil, MinVersion: tls.VersionTLS12})
	wrongCA, _ := newTLSTestTransport(t, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{rogue.issue(t, "x")}, MinVersion: tls.VersionTLS12})
	for name, bad := range map[string]*Transport{"no_cert": noCert, "wrong_ca": wrongCA} {
		var resp raft.AppendEntriesResponse
		if err := bad.AppendEntries("a", server.LocalAddr(), appendReq(1, 0, 1, 8), &resp); err == nil {
			t.Fatalf("%s: request accepted without a valid client certificate", name)
		}
	}
	waitFor(t, "two handshake failures logged", func() bool { return logs.count("tls handshake failed") == 2 })
	if n := node.count(); n != 0 {
		t.Fatalf("node got %d requests from refused peers", n)
	}
	mustAppend(t, good, server, appendReq(1, 0, 1, 8))
}

// TestTLSTransport_RejectsNilConfig checks the constructor refuses a nil TLS config.
func TestTLSTransport_RejectsNilConfig(t *testing.T) {
	if _, err := NewTLSTransport("127.0.0.1:0", nil, nil, Options{}); err == nil {
		t.Fatal("NewTLSTransport accepted a nil config")
	}
}
