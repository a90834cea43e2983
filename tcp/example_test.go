package tcp_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/internal/testnet"
	"github.com/raftkit/raft/tcp"
)

// ExampleNewTLSTransport connects two nodes with mutual TLS: each presents a certificate
// signed by the cluster's CA and accepts only peers that present one too. Hand the transport
// to raft.NewRaft as usual; here a goroutine answers in place of node n2's raft.
func ExampleNewTLSTransport() {
	// Stand-ins for the files of a real deployment: ca.crt, and n1.crt/n1.key, n2.crt/n2.key.
	caPEM, nodes := examplePKI("n1", "n2")

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatal("no CA certificate")
	}
	config := func(certPEM, keyPEM []byte) *tls.Config {
		cert, err := tls.X509KeyPair(certPEM, keyPEM) // or tls.LoadX509KeyPair(file, file)
		if err != nil {
			log.Fatal(err)
		}
		return &tls.Config{
			Certificates: []tls.Certificate{cert},        // shown to the peers it dials and to those dialing it
			RootCAs:      pool,                           // verifies the peers it dials
			ClientCAs:    pool,                           // verifies the peers that dial it
			ClientAuth:   tls.RequireAndVerifyClientCert, // mutual: no certificate, no connection
			MinVersion:   tls.VersionTLS13,
		}
	}
	n1, err := tcp.NewTLSTransport("127.0.0.1:0", nil, config(nodes[0].cert, nodes[0].key), tcp.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer n1.Close()
	n2, err := tcp.NewTLSTransport("127.0.0.1:0", nil, config(nodes[1].cert, nodes[1].key), tcp.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer n2.Close()

	go func() {
		rpc := <-n2.Consumer()
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	}()
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion, ID: "n1", Addr: n1.LocalAddr()}
	var resp raft.AppendEntriesResponse
	if err := n1.AppendEntries("n2", n2.LocalAddr(), &raft.AppendEntriesRequest{RPCHeader: header, Term: 1}, &resp); err != nil {
		log.Fatal(err)
	}
	fmt.Println("n2 answered n1's heartbeat over mutual TLS:", resp.Success)

	// A peer that trusts the CA but has no certificate of its own is turned away.
	anon, err := tcp.NewTLSTransport("127.0.0.1:0", nil, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
		tcp.Options{Timeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer anon.Close()
	err = anon.AppendEntries("n2", n2.LocalAddr(), &raft.AppendEntriesRequest{RPCHeader: header, Term: 1}, &resp)
	fmt.Println("a peer without a certificate is refused:", err != nil)
	// Output:
	// n2 answered n1's heartbeat over mutual TLS: true
	// a peer without a certificate is refused: true
}

// examplePEM is one node's certificate and key, PEM-encoded as in its files.
type examplePEM struct{ cert, key []byte }

// examplePKI makes a throwaway CA and, for each name, a certificate for 127.0.0.1 valid for
// an hour, good as both TLS server and client. Real deployments use their own PKI.
func examplePKI(names ...string) (caPEM []byte, nodes []examplePEM) {
	ca, err := testnet.NewCA("example CA")
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range names {
		leaf, err := ca.Issue(name)
		if err != nil {
			log.Fatal(err)
		}
		nodes = append(nodes, examplePEM{cert: leaf.CertPEM, key: leaf.KeyPEM})
	}
	return ca.PEM, nodes
}
