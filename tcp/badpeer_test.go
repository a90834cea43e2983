package tcp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/raftkit/raft"
)

// badPeerSetup starts a server with a fake node and a well-behaved client that has already
// talked to it, so the test can check that the established peer keeps being served.
func badPeerSetup(t *testing.T, opts Options) (server, client *Transport, logs *logBuffer) {
	server, client, logs, _ = badPeerSetupNode(t, opts)
	return server, client, logs
}

// badPeerSetupNode is badPeerSetup that also returns the server's node.
func badPeerSetupNode(t *testing.T, opts Options) (server, client *Transport, logs *logBuffer, node *fakeNode) {
	t.Helper()
	server, logs = newTestTransport(t, opts)
	client, _ = newTestTransport(t, Options{})
	node = startNode(t, server, nil)
	mustAppend(t, client, server, appendReq(1, 0, 1, 8))
	mustAppend(t, client, server, appendReq(1, 0, 0, 0))
	return server, client, logs, node
}

// assertStillServes checks that the established client and a brand-new one both get answers.
func assertStillServes(t *testing.T, server, client *Transport) {
	t.Helper()
	mustAppend(t, client, server, appendReq(2, 1, 3, 100))
	mustAppend(t, client, server, appendReq(2, 0, 0, 0))
	fresh, _ := newTestTransport(t, Options{})
	mustAppend(t, fresh, server, appendReq(2, 1, 1, 10))
}

// rawDial opens a plain connection to trans, closed at the end of the test.
func rawDial(t *testing.T, trans *Transport) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", string(trans.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectClosedByPeer checks the server closes c within limit (reads end without a timeout).
func expectClosedByPeer(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, c)
	if isTimeout(err) {
		t.Fatalf("server kept the connection open for %s", limit)
	}
}

// encodeFrame returns one frame of type typ carrying v.
func encodeFrame(t testing.TB, typ frameType, v any) []byte {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	fw := newFrameWriter(newMsgpackHandle(), DefaultMaxFrameBytes)
	if err := fw.writeFrame(bw, typ, v); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	return out.Bytes()
}

// rawHeader returns a frame header announcing n body bytes.
func rawHeader(typ frameType, n uint32) []byte {
	h := []byte{byte(typ), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[1:], n)
	return h
}

// TestBadPeer_ClosesConnection sends each kind of bad input on a connection of its own and
// checks the server logs one clear error, closes that connection, and keeps serving.
func TestBadPeer_ClosesConnection(t *testing.T) {
	valid := encodeFrame(t, frameAppendEntries, appendReq(1, 0, 1, 8))
	garbage := make([]byte, 4096)
	seededRand(t, 20240611).Read(garbage)
	garbage[0] = 0x42 // an unknown type, whatever the seed
	cases := []struct {
		name, wantLog string
		input         []byte
		closeWrite    bool
	}{
		{"unknown_type", "unknown frame type", append(rawHeader(0x42, 1), 0), false},
		{"length_above_maximum", "frame too large", rawHeader(frameAppendEntries, 1<<31), false},
		{"length_at_uint32_max", "frame too large", rawHeader(frameInstallSnapshot, 1<<32-1), false},
		{"truncated_header", "truncated frame", []byte{byte(frameAppendEntries), 0, 0}, true},
		{"truncated_body", "truncated frame", valid[:len(valid)-5], true},
		{"garbage_bytes", "unknown frame type", garbage, false},
		{"invalid_msgpack", "malformed frame body", append(rawHeader(frameRequestVote, 3), 0xc1, 0xc1, 0xc1), false},
		{"trailing_bytes", "trailing bytes", append(rawHeader(frameTimeoutNow, uint32(len(valid)-5+2)), append(append([]byte{}, valid[5:]...), 0, 0)...), false},
		{"wrong_body_type", "malformed frame body", append(rawHeader(frameRequestVote, 2), 0xa1, 'x'), false},
		{"response_sent_to_listener", "unexpected frame", append(rawHeader(frameAppendEntries|responseFlag, 1), 0xc0), false},
		{"keepalive_with_body", "malformed frame body", append(rawHeader(frameKeepalive, 1), 0xc0), false},
		{"error_frame_sent_to_listener", "unexpected frame", append(rawHeader(frameError, 1), 0xa0), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			server, client, logs := badPeerSetup(t, Options{MaxFrameBytes: 1 << 20})
			conn := rawDial(t, server)
			if _, err := conn.Write(c.input); err != nil {
				t.Fatal(err)
			}
			if c.closeWrite {
				conn.(*net.TCPConn).CloseWrite()
			}
			expectClosedByPeer(t, conn, 5*time.Second)
			waitFor(t, "the log line", func() bool { return logs.count("closing inbound connection") == 1 })
			if !strings.Contains(logs.String(), c.wantLog) {
				t.Fatalf("log does not mention %q:\n%s", c.wantLog, logs)
			}
			assertStillServes(t, server, client)
			if n := logs.count("closing inbound connection"); n != 1 {
				t.Fatalf("%d warnings logged, want exactly one:\n%s", n, logs)
			}
		})
	}
}

// TestBadPeer_StallMidFrame sends half a frame and stops: the server must give up after its
// Timeout instead of holding the connection.
func TestBadPeer_StallMidFrame(t *testing.T) {
	server, client, logs := badPeerSetup(t, Options{Timeout: 300 * time.Millisecond})
	frame := encodeFrame(t, frameAppendEntries, appendReq(1, 0, 10, 100))
	conn := rawDial(t, server)
	if _, err := conn.Write(frame[:len(frame)/2]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	expectClosedByPeer(t, conn, 5*time.Second)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("stalled connection closed after %s, want about the 300ms timeout", took)
	}
	waitFor(t, "the log line", func() bool { return logs.count("truncated frame") == 1 })
	assertStillServes(t, server, client)
}

// TestBadPeer_SilentConnection opens a connection and sends nothing: it is closed after
// Timeout, so silent connections cannot pile up.
func TestBadPeer_SilentConnection(t *testing.T) {
	server, client, logs := badPeerSetup(t, Options{Timeout: 300 * time.Millisecond})
	conn := rawDial(t, server)
	expectClosedByPeer(t, conn, 5*time.Second)
	waitFor(t, "the log line", func() bool { return logs.count("idle connection closed") == 1 })
	assertStillServes(t, server, client)
}

// TestBadPeer_ConnectionFlood opens 1,000 connections: the server keeps at most
// MaxInboundConns open, logs the refusals, frees the silent ones after Timeout, and keeps
// serving its established peer and new ones.
func TestBadPeer_ConnectionFlood(t *testing.T) {
	const limit, flood = 32, 1000
	server, client, logs := badPeerSetup(t, Options{MaxInboundConns: limit, Timeout: 500 * time.Millisecond})
	established := inboundCount(server)
	conns := make([]net.Conn, 0, flood)
	for i := 0; i < flood; i++ {
		c, err := net.Dial("tcp", string(server.LocalAddr()))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		if n := inboundCount(server); n > limit {
			t.Fatalf("server holds %d inbound connections, limit %d", n, limit)
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	waitFor(t, "a refusal log line", func() bool { return logs.count("too many inbound connections") >= 1 })
	mustAppend(t, client, server, appendReq(2, 1, 3, 100)) // the established peer is served
	waitFor(t, "the silent connections to be freed", func() bool { return inboundCount(server) <= established })
	if n := logs.count("refused inbound connection"); n > 10 {
		t.Fatalf("%d refusal lines for one flood, want them rate-limited", n)
	}
	assertStillServes(t, server, client)
}

// TestBadPeer_InvalidRequestAnsweredWithError sends requests that decode but are invalid: the
// node never sees them, the peer gets an error wrapping raft.ErrBadRequest, and the
// connection stays usable (except after a snapshot header, whose body length is unknown).
func TestBadPeer_InvalidRequestAnsweredWithError(t *testing.T) {
	server, client, logs, node := badPeerSetupNode(t, Options{})
	seen := node.count()
	conn := rawDial(t, server)
	br := bufio.NewReader(conn)
	fr := newFrameReader(newMsgpackHandle(), DefaultMaxFrameBytes)
	bad := appendReq(1, 0, 3, 8)
	bad.Entries[1] = nil
	roundTrip := func(typ frameType, v any, resp any) error {
		if _, err := conn.Write(encodeFrame(t, typ, v)); err != nil {
			t.Fatal(err)
		}
		return fr.readResponse(br, typ, resp, "server")
	}
	err := roundTrip(frameAppendEntries, bad, new(raft.AppendEntriesResponse))
	if !errors.Is(err, raft.ErrBadRequest) {
		t.Fatalf("nil entry: err = %v, want a remote raft.ErrBadRequest", err)
	}
	var resp raft.AppendEntriesResponse
	if err := roundTrip(frameAppendEntries, appendReq(1, 0, 0, 0), &resp); err != nil || !resp.Success {
		t.Fatalf("heartbeat on the same connection: %v, %+v", err, resp)
	}
	err = roundTrip(frameInstallSnapshot, &raft.InstallSnapshotRequest{Size: -5}, new(raft.InstallSnapshotResponse))
	if !errors.Is(err, raft.ErrBadRequest) {
		t.Fatalf("negative size: err = %v, want a remote raft.ErrBadRequest", err)
	}
	expectClosedByPeer(t, conn, 5*time.Second)
	if n := node.count() - seen; n != 1 {
		t.Fatalf("the node got %d requests, want only the valid heartbeat", n)
	}
	if n := logs.count("rejected malformed request"); n != 2 {
		t.Fatalf("%d rejections logged, want 2:\n%s", n, logs)
	}
	assertStillServes(t, server, client)
}
