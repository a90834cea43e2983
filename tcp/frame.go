package tcp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/raftkit/raft"
)

// frameType is the first byte of every frame (see the package documentation).
type frameType uint8

const (
	// frameKeepalive has an empty body and no answer. A pipeline sends it when it opens and
	// while it is idle, so the listener does not close it as silent.
	frameKeepalive frameType = 0x00

	frameAppendEntries   frameType = 0x01
	frameRequestVote     frameType = 0x02
	frameRequestPreVote  frameType = 0x03
	frameInstallSnapshot frameType = 0x04
	frameTimeoutNow      frameType = 0x05
	frameReadIndex       frameType = 0x06

	// responseFlag marks an answer: the response to a request of type t has type
	// t|responseFlag.
	responseFlag frameType = 0x80

	// frameError answers any request with an error message (a msgpack string) instead of a
	// response.
	frameError frameType = 0xFF
)

// frameHeaderBytes is the size of a frame header: the type byte and a big-endian uint32 body
// length.
const frameHeaderBytes = 5

// isRequest reports whether t is one of the request types.
func (t frameType) isRequest() bool {
	return t >= frameAppendEntries && t <= frameReadIndex
}

// known reports whether t is a request, a response to one, the error frame or a keepalive.
func (t frameType) known() bool {
	return t.isRequest() || (t &^ responseFlag).isRequest() || t == frameError || t == frameKeepalive
}

// String names the frame type for errors and logs.
func (t frameType) String() string {
	names := [...]string{"", "append_entries", "request_vote", "request_pre_vote", "install_snapshot", "timeout_now", "read_index"}
	switch {
	case t == frameError:
		return "error"
	case t == frameKeepalive:
		return "keepalive"
	case t.isRequest():
		return names[t]
	case (t &^ responseFlag).isRequest():
		return names[t&^responseFlag] + "_response"
	default:
		return fmt.Sprintf("unknown(0x%02x)", uint8(t))
	}
}

// newMsgpackHandle returns the codec configuration of the wire format. Each Transport holds
// its own, so the package keeps no shared state.
func newMsgpackHandle() *codec.MsgpackHandle {
	return &codec.MsgpackHandle{WriteExt: true}
}

const (
	// minBodyGrowBytes is the first chunk a frame body buffer grows by; it then doubles.
	// Growing only as bytes arrive means a peer announcing a large frame and stalling holds
	// at most twice what it actually sent.
	minBodyGrowBytes = 64 << 10

	// retainBufferBytes is the largest read buffer a connection keeps between frames, so idle
	// connections hold little memory after a large frame.
	retainBufferBytes = 1 << 20
)

// frameReader reads frames from one connection. It reuses one decoder and one body buffer
// and is owned by the single goroutine reading that connection.
type frameReader struct {
	dec      *codec.Decoder
	hdr      [frameHeaderBytes]byte
	buf      []byte
	maxBytes int
}

func newFrameReader(h *codec.MsgpackHandle, maxBytes int) frameReader {
	return frameReader{dec: codec.NewDecoderBytes(nil, h), maxBytes: maxBytes}
}

// readFrame reads one whole frame. The body aliases an internal buffer and is valid until the
// next readFrame or release. A clean end of stream before the first header byte returns
// io.EOF; every other failure wraps one of the frame sentinels.
func (fr *frameReader) readFrame(r io.Reader) (frameType, []byte, error) {
	if n, err := io.ReadFull(r, fr.hdr[:]); err != nil {
		if n == 0 && err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, fmt.Errorf("%w: header after %d bytes: %w", ErrTruncatedFrame, n, err)
	}
	typ := frameType(fr.hdr[0])
	if !typ.known() {
		return typ, nil, fmt.Errorf("%w: %s", ErrUnknownFrameType, typ)
	}
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	if uint64(n) > uint64(fr.maxBytes) {
		return typ, nil, fmt.Errorf("%w: %s frame of %d bytes, limit %d", ErrFrameTooLarge, typ, n, fr.maxBytes)
	}
	body, err := fr.readBody(r, int(n))
	if err != nil {
		return typ, nil, fmt.Errorf("%w: %s body of %d bytes: %w", ErrTruncatedFrame, typ, n, err)
	}
	return typ, body, nil
}

// readBody reads exactly n bytes into fr.buf, growing it as bytes arrive.
func (fr *frameReader) readBody(r io.Reader, n int) ([]byte, error) {
	buf := fr.buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, cap(buf)+max(cap(buf), minBodyGrowBytes)))
			copy(grown, buf)
			buf = grown
		}
		m, err := io.ReadFull(r, buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+m]
		if err != nil {
			fr.buf = buf
			return nil, err
		}
	}
	fr.buf = buf
	return buf, nil
}

// release drops a large body buffer after its frame was handled.
func (fr *frameReader) release() {
	if cap(fr.buf) > retainBufferBytes {
		fr.buf = nil
	}
}

// decode decodes body into v, which must be exactly one msgpack value. It reads nothing but
// body, so its memory use is bounded by the frame length.
func (fr *frameReader) decode(body []byte, v any) error {
	fr.dec.ResetBytes(body)
	if err := fr.dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedFrame, err)
	}
	if n := fr.dec.NumBytesRead(); n != len(body) {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformedFrame, len(body)-n)
	}
	return nil
}

// readResponse reads the answer to a request of type req into resp (a pointer to the matching
// response struct, zeroed by the caller). An error frame returns a *RemoteError, after which
// the connection is still usable; any other error leaves the stream in an unknown state.
func (fr *frameReader) readResponse(r io.Reader, req frameType, resp any, peer raft.ServerAddress) error {
	typ, body, err := fr.readFrame(r)
	defer fr.release()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: connection closed before the response: %w", ErrTruncatedFrame, err)
	}
	if err != nil {
		return err
	}
	switch typ {
	case req | responseFlag:
		return fr.decode(body, resp)
	case frameError:
		var msg string
		if err := fr.decode(body, &msg); err != nil {
			return err
		}
		return &RemoteError{Peer: peer, Msg: msg}
	default:
		return fmt.Errorf("%w: %s in answer to %s", ErrUnexpectedFrame, typ, req)
	}
}

// frameWriter writes frames to one connection, reusing one encoder and one buffer. It is
// owned by whoever holds the connection.
type frameWriter struct {
	enc      *codec.Encoder
	hdr      [frameHeaderBytes]byte
	buf      []byte
	maxBytes int
}

func newFrameWriter(h *codec.MsgpackHandle, maxBytes int) frameWriter {
	fw := frameWriter{maxBytes: maxBytes}
	fw.enc = codec.NewEncoderBytes(&fw.buf, h)
	return fw
}

// writeFrame encodes v as the body of a frame of type typ and writes the frame to w. It
// does not flush. A body above the frame limit is refused with ErrFrameTooLarge before
// anything is written, so the connection stays usable.
func (fw *frameWriter) writeFrame(w *bufio.Writer, typ frameType, v any) error {
	fw.enc.ResetBytes(&fw.buf)
	if err := fw.enc.Encode(v); err != nil {
		return fmt.Errorf("tcp: encoding %s: %w", typ, err)
	}
	if len(fw.buf) > fw.maxBytes {
		return fmt.Errorf("%w: %s frame of %d bytes, limit %d", ErrFrameTooLarge, typ, len(fw.buf), fw.maxBytes)
	}
	fw.hdr[0] = byte(typ)
	binary.BigEndian.PutUint32(fw.hdr[1:], uint32(len(fw.buf)))
	if _, err := w.Write(fw.hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(fw.buf)
	return err
}

// writeKeepalive writes a keepalive frame to w. It does not flush.
func (fw *frameWriter) writeKeepalive(w *bufio.Writer) error {
	fw.hdr = [frameHeaderBytes]byte{byte(frameKeepalive)}
	_, err := w.Write(fw.hdr[:])
	return err
}

// decodeRequest decodes and validates the body of a request frame into a new request struct,
// which then belongs to the receiver. A request that decodes but fails validation returns an
// error wrapping raft.ErrBadRequest, after which the stream is still at a frame boundary.
func decodeRequest(fr *frameReader, typ frameType, body []byte) (any, error) {
	switch typ {
	case frameAppendEntries:
		if err := checkEntriesCount(body); err != nil {
			return nil, err
		}
		return decodeValid(fr, body, validateAppendEntries)
	case frameRequestVote:
		return decodeValid[raft.RequestVoteRequest](fr, body, nil)
	case frameRequestPreVote:
		return decodeValid[raft.RequestPreVoteRequest](fr, body, nil)
	case frameInstallSnapshot:
		return decodeValid(fr, body, validateInstallSnapshot)
	case frameTimeoutNow:
		return decodeValid[raft.TimeoutNowRequest](fr, body, nil)
	case frameReadIndex:
		return decodeValid[raft.ReadIndexRequest](fr, body, nil)
	default:
		return nil, fmt.Errorf("%w: %s is not a request", ErrUnexpectedFrame, typ)
	}
}

// decodeValid decodes body into a new T and runs validate on it, if given.
func decodeValid[T any](fr *frameReader, body []byte, validate func(*T) error) (*T, error) {
	v := new(T)
	if err := fr.decode(body, v); err != nil {
		return nil, err
	}
	if validate != nil {
		if err := validate(v); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// validateAppendEntries rejects what no correct leader sends, so the receiving node can index
// and store the entries without further checks: nil entries, unknown types, indexes that do
// not follow PrevLogIndex one by one, and terms that decrease, precede PrevLogTerm or exceed
// the request's term (Raft paper, Figure 2 and the Log Matching Property of section 5.3).
func validateAppendEntries(req *raft.AppendEntriesRequest) error {
	prevTerm := req.PrevLogTerm
	for i, e := range req.Entries {
		switch {
		case e == nil:
			return fmt.Errorf("%w: entry %d is nil", raft.ErrBadRequest, i)
		case !e.Type.Valid():
			return fmt.Errorf("%w: entry %d has type %s", raft.ErrBadRequest, i, e.Type)
		case e.Index != req.PrevLogIndex+1+uint64(i):
			return fmt.Errorf("%w: entry %d has index %d after prev index %d", raft.ErrBadRequest, i, e.Index, req.PrevLogIndex)
		case e.Term < prevTerm || e.Term > req.Term:
			return fmt.Errorf("%w: entry %d has term %d, outside [%d, %d]", raft.ErrBadRequest, i, e.Term, prevTerm, req.Term)
		}
		prevTerm = e.Term
	}
	return nil
}

// validateInstallSnapshot rejects a negative body size, which would leave the stream
// position undefined.
func validateInstallSnapshot(req *raft.InstallSnapshotRequest) error {
	if req.Size < 0 {
		return fmt.Errorf("%w: negative snapshot size %d", raft.ErrBadRequest, req.Size)
	}
	return nil
}
