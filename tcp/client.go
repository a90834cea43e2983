package tcp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"syscall"
	"time"

	"github.com/raftkit/raft"
)

// connBufferBytes sizes the bufio reader and writer of each connection. Large frame bodies
// bypass them, so they only need to batch headers and small messages.
const connBufferBytes = 16 << 10

// poolKey names one pool of idle outgoing connections. Heartbeats have a pool of their own,
// so they never wait behind a large AppendEntries or a snapshot stream on a shared
// connection, nor for a dial while those hold every pooled connection.
type poolKey struct {
	target    raft.ServerAddress
	heartbeat bool
}

// outConn is one outgoing connection. It is used by one call (or one pipeline) at a time.
type outConn struct {
	target   raft.ServerAddress
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	fr       frameReader
	fw       frameWriter
	lastUsed time.Time // set when the connection is returned to the pool
}

// AppendEntries sends one AppendEntries request and waits for its response. Requests without
// entries (heartbeats) use a connection of their own.
func (t *Transport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	*resp = raft.AppendEntriesResponse{}
	return t.call(poolKey{target: target, heartbeat: len(args.Entries) == 0}, frameAppendEntries, args, resp)
}

// RequestVote sends a vote request and waits for its response.
func (t *Transport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	*resp = raft.RequestVoteResponse{}
	return t.call(poolKey{target: target}, frameRequestVote, args, resp)
}

// RequestPreVote sends a pre-vote request and waits for its response.
func (t *Transport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	*resp = raft.RequestPreVoteResponse{}
	return t.call(poolKey{target: target}, frameRequestPreVote, args, resp)
}

// TimeoutNow asks the peer to start an election and waits for its response.
func (t *Transport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	*resp = raft.TimeoutNowResponse{}
	return t.call(poolKey{target: target}, frameTimeoutNow, args, resp)
}

// ReadIndex asks the leader for a read index and waits for its response. It uses the
// heartbeat pool: a read confirmation is as latency-sensitive as a heartbeat and must not wait
// behind a large AppendEntries or a snapshot stream.
func (t *Transport) ReadIndex(_ raft.ServerID, target raft.ServerAddress, args *raft.ReadIndexRequest, resp *raft.ReadIndexResponse) error {
	*resp = raft.ReadIndexResponse{}
	return t.call(poolKey{target: target, heartbeat: true}, frameReadIndex, args, resp)
}

// InstallSnapshot sends the request, then streams exactly args.Size bytes of data after it,
// then waits for the response. The data is copied through a small buffer, never held whole.
// The whole exchange may take Options.Timeout plus args.Size at
// Options.SnapshotMinBytesPerSecond.
func (t *Transport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if err := validateInstallSnapshot(args); err != nil {
		return err
	}
	*resp = raft.InstallSnapshotResponse{}
	deadline := t.opts.snapshotDeadline(time.Now(), args.Size)
	// Always a fresh connection, closed afterwards: the data stream can not be replayed, so
	// a retry after an idle pooled connection turned out dead is not possible here.
	// Snapshots are rare, and one dial is nothing next to the transfer.
	c, err := t.dial(target, deadline)
	if err != nil {
		return t.callError(frameInstallSnapshot, target, err)
	}
	err = c.exchange(deadline, frameInstallSnapshot, args, resp, func(w *bufio.Writer) error {
		n, err := io.CopyN(w, data, args.Size)
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: got %d of %d bytes", ErrShortSnapshot, n, args.Size)
		}
		return err
	})
	t.discard(c) // not pooled: it was dialled for this transfer alone
	return t.callError(frameInstallSnapshot, target, err)
}

// call performs one request/response exchange on a pooled connection. If a connection taken
// from the pool turns out dead (the peer closed it: it restarted, or its idle timer fired),
// the request is sent once more on a fresh connection within the same deadline. Every Raft
// RPC is safe to repeat: the receiver handles a duplicate AppendEntries, vote or TimeoutNow
// the same way as the original.
func (t *Transport) call(key poolKey, typ frameType, args, resp any) error {
	deadline := time.Now().Add(t.opts.Timeout)
	c, err := t.takeIdle(key)
	if err != nil {
		return t.callError(typ, key.target, err)
	}
	if c != nil {
		err = c.exchange(deadline, typ, args, resp, nil)
		t.release(key, c, err)
		if !deadConnection(err) {
			return t.callError(typ, key.target, err)
		}
		t.logger.Debug("pooled connection was dead, retrying on a new one", "peer", string(key.target), "error", err)
		reflect.ValueOf(resp).Elem().SetZero() // a response read half-way is not kept
	}
	if c, err = t.dial(key.target, deadline); err != nil {
		return t.callError(typ, key.target, err)
	}
	err = c.exchange(deadline, typ, args, resp, nil)
	t.release(key, c, err)
	return t.callError(typ, key.target, err)
}

// deadConnection says whether err is what a connection the peer already closed gives: end of
// stream, reset or broken pipe. A timeout, an error answer or a decode error is not: those
// say something about the request or the peer, not about a stale connection.
func deadConnection(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// exchange writes a request frame, then whatever body writes (if any), then reads the
// response, all before deadline.
func (c *outConn) exchange(deadline time.Time, typ frameType, args, resp any, body func(*bufio.Writer) error) error {
	if err := c.nc.SetDeadline(deadline); err != nil {
		return err
	}
	if err := c.fw.writeFrame(c.bw, typ, args); err != nil {
		return err
	}
	if body != nil {
		if err := body(c.bw); err != nil {
			return err
		}
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	return c.fr.readResponse(c.br, typ, resp, c.target)
}

// dial opens a new registered outgoing connection.
func (t *Transport) dial(target raft.ServerAddress, deadline time.Time) (*outConn, error) {
	nc, err := t.layer.Dial(target, time.Until(deadline))
	if err != nil {
		return nil, fmt.Errorf("dialing: %w", err)
	}
	c := &outConn{
		target: target,
		nc:     nc,
		br:     bufio.NewReaderSize(nc, connBufferBytes),
		bw:     bufio.NewWriterSize(nc, connBufferBytes),
		fr:     newFrameReader(t.handle, t.opts.MaxFrameBytes),
		fw:     newFrameWriter(t.handle, t.opts.MaxFrameBytes),
	}
	t.mu.Lock()
	shutdown := t.shutdown
	if !shutdown {
		t.outbound[c] = struct{}{}
	}
	t.mu.Unlock()
	if shutdown {
		nc.Close()
		return nil, raft.ErrTransportShutdown
	}
	return c, nil
}

// takeIdle pops the most recently used idle connection of key, closing those idle for more
// than half of IdleTimeout (the peer may be about to close them).
func (t *Transport) takeIdle(key poolKey) (*outConn, error) {
	var stale []*outConn
	var c *outConn
	now := time.Now()
	t.mu.Lock()
	if t.shutdown {
		t.mu.Unlock()
		return nil, raft.ErrTransportShutdown
	}
	conns := t.idle[key]
	for len(conns) > 0 && c == nil {
		last := conns[len(conns)-1]
		conns = conns[:len(conns)-1]
		if now.Sub(last.lastUsed) > t.opts.IdleTimeout/2 {
			delete(t.outbound, last)
			stale = append(stale, last)
			continue
		}
		c = last
	}
	t.idle[key] = conns
	t.mu.Unlock()
	for _, s := range stale {
		s.nc.Close()
	}
	return c, nil
}

// release returns c to its pool after a call that ended with err. Only a connection whose
// stream is known to be at a frame boundary goes back: after success or an error answer from
// the peer. Anything else closes it.
func (t *Transport) release(key poolKey, c *outConn, err error) {
	var remote *RemoteError
	if err != nil && !errors.As(err, &remote) {
		t.discard(c)
		return
	}
	c.lastUsed = time.Now()
	limit := t.opts.MaxPool
	if key.heartbeat {
		limit = 1
	}
	t.mu.Lock()
	pooled := !t.shutdown && len(t.idle[key]) < limit
	if pooled {
		t.idle[key] = append(t.idle[key], c)
	}
	t.mu.Unlock()
	if !pooled {
		t.discard(c)
	}
}

// discard closes c and forgets it.
func (t *Transport) discard(c *outConn) {
	t.mu.Lock()
	delete(t.outbound, c)
	t.mu.Unlock()
	c.nc.Close()
}
