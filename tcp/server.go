package tcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/raftkit/raft"
)

// Accept errors back off from minAcceptBackoff, doubling up to maxAcceptBackoff, so a
// failing listener (out of file descriptors, say) does not spin.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// acceptLoop accepts inbound connections until the layer is closed. Owned by the transport;
// exits when Accept fails after Close.
func (t *Transport) acceptLoop() {
	var backoff time.Duration
	for {
		nc, err := t.layer.Accept()
		if err != nil {
			if t.isShutdown() {
				return
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			t.logger.Warn("accepting connection failed", "error", err)
			timer := time.NewTimer(backoff)
			select {
			case <-timer.C:
			case <-t.shutdownCh:
				timer.Stop()
				return
			}
			continue
		}
		backoff = 0
		t.admit(nc)
	}
}

// admit starts a handler for nc, or closes it at once when MaxInboundConns are open.
func (t *Transport) admit(nc net.Conn) {
	full := false
	started := t.spawn(func() bool {
		if full = len(t.inbound) >= t.opts.MaxInboundConns; full {
			return false
		}
		t.inbound[nc] = struct{}{}
		return true
	}, func() { t.serveConn(nc) })
	if started {
		return
	}
	nc.Close()
	if !full {
		return
	}
	t.mu.Lock()
	n, logNow := t.refusals.note(time.Now())
	t.mu.Unlock()
	if logNow {
		t.logger.Warn("refused inbound connection", "peer", remoteName(nc),
			"error", fmt.Errorf("%w: limit %d reached, %d refused since the last report",
				ErrTooManyConns, t.opts.MaxInboundConns, n))
	}
}

// inConn is one inbound connection, owned by its handler goroutine.
type inConn struct {
	nc   net.Conn
	peer string
	br   *bufio.Reader
	bw   *bufio.Writer
	fr   frameReader
	fw   frameWriter
}

// serveConn handles one inbound connection until it fails, the peer closes it, or the
// transport shuts down. It logs once why the connection ended, then closes it and drops its
// buffers. Owned by the transport.
func (t *Transport) serveConn(nc net.Conn) {
	defer func() {
		t.mu.Lock()
		delete(t.inbound, nc)
		t.mu.Unlock()
		nc.Close()
	}()
	ic := &inConn{nc: nc, peer: remoteName(nc)}
	if err := t.handshake(nc); err != nil {
		t.logger.Warn("tls handshake failed", "peer", ic.peer, "error", err)
		return
	}
	ic.br = bufio.NewReaderSize(nc, connBufferBytes)
	ic.bw = bufio.NewWriterSize(nc, connBufferBytes)
	ic.fr = newFrameReader(t.handle, t.opts.MaxFrameBytes)
	ic.fw = newFrameWriter(t.handle, t.opts.MaxFrameBytes)
	wait := t.opts.Timeout // a new connection must send its first frame promptly
	for {
		err := t.serveFrame(ic, wait)
		if err != nil {
			t.logConnEnd(ic.peer, err)
			return
		}
		wait = t.opts.IdleTimeout
	}
}

// handshake completes a TLS handshake within Timeout, when the layer speaks TLS; otherwise
// the handshake would happen lazily on the first read, with no clear error.
func (t *Transport) handshake(nc net.Conn) error {
	hs, ok := nc.(interface {
		HandshakeContext(context.Context) error
	})
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.opts.Timeout)
	defer cancel()
	return hs.HandshakeContext(ctx)
}

// errIdle ends a connection that sent nothing for the idle timeout.
var errIdle = errors.New("tcp: idle connection closed")

// logConnEnd logs why an inbound connection ended: quietly for ordinary ends, as a warning
// for a misbehaving peer.
func (t *Transport) logConnEnd(peer string, err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, errIdle), t.isShutdown():
		t.logger.Debug("inbound connection ended", "peer", peer, "error", err)
	default:
		t.logger.Warn("closing inbound connection", "peer", peer, "error", err)
	}
}

// serveFrame waits up to wait for the next frame, reads it within Timeout, and handles it.
// A non-nil error ends the connection.
func (t *Transport) serveFrame(ic *inConn, wait time.Duration) error {
	if err := ic.nc.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	if _, err := ic.br.Peek(1); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: nothing received for %s", errIdle, wait)
		}
		return err
	}
	if err := ic.nc.SetReadDeadline(time.Now().Add(t.opts.Timeout)); err != nil {
		return err
	}
	typ, body, err := ic.fr.readFrame(ic.br)
	if err != nil {
		return err
	}
	if typ == frameKeepalive {
		if len(body) != 0 {
			return fmt.Errorf("%w: keepalive with a %d byte body", ErrMalformedFrame, len(body))
		}
		return nil
	}
	if !typ.isRequest() {
		return fmt.Errorf("%w: %s sent to a listener", ErrUnexpectedFrame, typ)
	}
	cmd, err := decodeRequest(&ic.fr, typ, body)
	ic.fr.release()
	if errors.Is(err, raft.ErrBadRequest) {
		t.logger.Warn("rejected malformed request", "peer", ic.peer, "error", err)
		if werr := t.writeResponse(ic, typ, raft.RPCResponse{Error: err}); werr != nil {
			return werr
		}
		if typ == frameInstallSnapshot {
			return err // the body that may follow has no known length
		}
		return nil
	}
	if err != nil {
		return err
	}
	return t.dispatch(ic, typ, cmd)
}

// dispatch hands a request to the node, waits for its answer and writes it back.
func (t *Transport) dispatch(ic *inConn, typ frameType, cmd any) error {
	respCh := make(chan raft.RPCResponse, 1) // one: RPC.Respond never blocks (raft.RPC contract)
	rpc := raft.RPC{Command: cmd, RespChan: respCh}
	var body *snapshotBody
	if req, ok := cmd.(*raft.InstallSnapshotRequest); ok {
		if err := ic.nc.SetReadDeadline(t.opts.snapshotDeadline(time.Now(), req.Size)); err != nil {
			return err
		}
		body = &snapshotBody{r: ic.br, remaining: req.Size}
		rpc.Reader = body
	}
	select {
	case t.consumerCh <- rpc:
	case <-t.shutdownCh:
		return raft.ErrTransportShutdown
	}
	var resp raft.RPCResponse
	select {
	case resp = <-respCh:
	case <-t.shutdownCh:
		return raft.ErrTransportShutdown
	}
	if body != nil {
		if err := body.finish(); err != nil {
			return err
		}
	}
	return t.writeResponse(ic, typ, resp)
}

// writeResponse sends resp as the answer to a request of type typ, within Timeout.
func (t *Transport) writeResponse(ic *inConn, typ frameType, resp raft.RPCResponse) error {
	if err := ic.nc.SetWriteDeadline(time.Now().Add(t.opts.Timeout)); err != nil {
		return err
	}
	var err error
	switch {
	case resp.Error != nil:
		err = ic.fw.writeFrame(ic.bw, frameError, resp.Error.Error())
	case responseFits(typ, resp.Response):
		err = ic.fw.writeFrame(ic.bw, typ|responseFlag, resp.Response)
	default:
		t.logger.Error("node answered with the wrong response type", "peer", ic.peer,
			"error", fmt.Errorf("%w: %T in answer to %s", ErrUnexpectedFrame, resp.Response, typ))
		err = ic.fw.writeFrame(ic.bw, frameError, fmt.Sprintf("tcp: node answered %s with %T", typ, resp.Response))
	}
	if err != nil {
		return err
	}
	return ic.bw.Flush()
}

// responseFits reports whether resp is a non-nil response of request type typ.
func responseFits(typ frameType, resp any) bool {
	switch r := resp.(type) {
	case *raft.AppendEntriesResponse:
		return typ == frameAppendEntries && r != nil
	case *raft.RequestVoteResponse:
		return typ == frameRequestVote && r != nil
	case *raft.RequestPreVoteResponse:
		return typ == frameRequestPreVote && r != nil
	case *raft.InstallSnapshotResponse:
		return typ == frameInstallSnapshot && r != nil
	case *raft.TimeoutNowResponse:
		return typ == frameTimeoutNow && r != nil
	case *raft.ReadIndexResponse:
		return typ == frameReadIndex && r != nil
	default:
		return false
	}
}

// errBodyDetached is returned by a snapshot body read after the node answered the request.
var errBodyDetached = errors.New("tcp: snapshot body read after the response")

// snapshotBody is RPC.Reader of an InstallSnapshot: it reads exactly the announced size from
// the connection, never more, so the next frame stays intact.
type snapshotBody struct {
	// mu hands the connection's reader from the node back to the handler. It is held during
	// Read, which does I/O, because the bufio.Reader underneath must not be used by both at
	// once; the connection's read deadline bounds how long.
	mu        sync.Mutex
	r         io.Reader
	remaining int64
	detached  bool
}

// Read reads the next bytes of the snapshot body; io.EOF after the last one.
func (b *snapshotBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.detached {
		return 0, errBodyDetached
	}
	if b.remaining == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.r.Read(p)
	b.remaining -= int64(n)
	if errors.Is(err, io.EOF) && b.remaining > 0 {
		err = fmt.Errorf("%w: snapshot body ended %d bytes early", ErrTruncatedFrame, b.remaining)
	}
	return n, err
}

// finish takes the connection back from the node and discards the unread rest of the body, so
// the connection can carry the response and further requests.
func (b *snapshotBody) finish() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.detached = true
	if b.remaining == 0 {
		return nil
	}
	n, err := io.CopyN(io.Discard, b.r, b.remaining)
	b.remaining -= n
	if err != nil {
		return fmt.Errorf("%w: discarding the unread snapshot body: %w", ErrTruncatedFrame, err)
	}
	return nil
}

// remoteName names the peer of an inbound connection for logs. A custom StreamLayer may hand
// out connections without a remote address.
func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil {
		return a.String()
	}
	return "unknown"
}
