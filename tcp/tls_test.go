package tcp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/raftkit/raft"
)

// testCA is a certificate authority generated for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for 127.0.0.1 usable as both server and client.
func (ca *testCA) issue(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mutualTLS returns a config presenting certs and requiring peers signed by ca.
func mutualTLS(ca *testCA, certs ...tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: certs,
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
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
	noCert, _ := newTLSTestTransport(t, &tls.Config{RootCAs: ca.pool, Certificates: nil, MinVersion: tls.VersionTLS12})
	wrongCA, _ := newTLSTestTransport(t, &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{rogue.issue(t, "x")}, MinVersion: tls.VersionTLS12})
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
