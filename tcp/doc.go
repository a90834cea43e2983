// Package tcp is a raft.Transport over TCP, TLS or any custom StreamLayer, hardened against
// misbehaving peers.
//
// # Use
//
//	trans, err := tcp.NewTransport("10.0.0.5:7000", nil, tcp.Options{Logger: logger})
//	// or tcp.NewTLSTransport(bind, nil, tlsConf, opts), or tcp.NewTransportWithLayer(layer, opts)
//	defer trans.Close()
//
// The second argument is the address peers dial, advertised exactly as given; nil means the
// bound address. HostAddr advertises a host name, so peers resolve it whenever they connect:
//
//	trans, err := tcp.NewTransport("0.0.0.0:7000", tcp.HostAddr("node1:7000"), opts)
//
// # Connections
//
// Outgoing requests use a pool of idle connections per peer (Options.MaxPool); a request
// that finds none dials a new one, and a connection goes back to the pool only when its
// stream is at a frame boundary. Heartbeats (AppendEntries without entries) use a separate
// pool, so they never queue behind a large AppendEntries or a snapshot stream. A pipeline
// (AppendEntriesPipeline) owns one connection and keeps up to Options.MaxPipelineInflight
// requests in flight; responses come back in order. Every outgoing request is bounded by
// Options.Timeout; InstallSnapshot gets Timeout plus Size/Options.SnapshotMinBytesPerSecond.
//
// Each inbound connection has one handler goroutine that reads a request, hands it to the
// node on Consumer, waits for the node's answer and writes it back; so requests on one
// connection are answered in order, and a peer gets concurrency by opening connections.
//
// # Wire format
//
// A connection carries frames. Every frame is:
//
//	offset 0   1 byte   type
//	offset 1   4 bytes  body length n, unsigned big-endian, at most Options.MaxFrameBytes
//	offset 5   n bytes  body: exactly one msgpack value (go-msgpack, WriteExt), structs as
//	                    maps keyed by the Go field names of the raft wire structs
//
// Request types, sent by the dialing side, and the body each carries:
//
//	0x01 AppendEntries     raft.AppendEntriesRequest
//	0x02 RequestVote       raft.RequestVoteRequest
//	0x03 RequestPreVote    raft.RequestPreVoteRequest
//	0x04 InstallSnapshot   raft.InstallSnapshotRequest, then Size raw bytes of snapshot
//	                       data outside any frame
//	0x05 TimeoutNow        raft.TimeoutNowRequest
//	0x06 ReadIndex         raft.ReadIndexRequest (a follower asking the leader for a read index)
//
// The listening side answers each request, in order, with either the response frame, of type
// request|0x80 (0x81 ... 0x86) carrying the matching raft response struct, or an error frame
// of type 0xFF whose body is a msgpack string: the message of the error the node answered
// with, returned to the caller as a *RemoteError. Type 0x00 is a keepalive: empty body, no
// answer; a pipeline sends one when it opens and every IdleTimeout/3 after, so a listener
// never closes it as silent or idle. There is no handshake and no other frame.
//
// # Bad peers
//
// An unknown type, a response type sent to a listener, a length above MaxFrameBytes, a body
// that is not exactly one value of the announced type, a connection that ends or stalls
// (longer than Timeout) inside a frame, a new connection silent for Timeout, or a connection
// idle longer than Options.IdleTimeout: the handler logs one line and closes that connection.
// A frame body is read into a buffer that grows only as bytes arrive and decoded from it, so
// memory per connection is bounded by MaxFrameBytes (times two while growing) whatever the
// peer announces. Requests that decode but could make the node misbehave (nil or
// non-consecutive entries, unknown entry types, a negative snapshot size) are answered with
// an error wrapping raft.ErrBadRequest. At most Options.MaxInboundConns inbound connections are
// open at once; more are closed as soon as they are accepted.
package tcp
