package tcp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/raftkit/raft"
)

// TestFrameReader_GrowsOnlyAsBytesArrive announces the maximum length and sends a few bytes:
// the buffer held must stay near what arrived, not what was announced.
func TestFrameReader_GrowsOnlyAsBytesArrive(t *testing.T) {
	fr := newFrameReader(newMsgpackHandle(), DefaultMaxFrameBytes)
	input := append(rawHeader(frameAppendEntries, DefaultMaxFrameBytes), make([]byte, 1000)...)
	_, _, err := fr.readFrame(bytes.NewReader(input))
	if !errors.Is(err, ErrTruncatedFrame) {
		t.Fatalf("err = %v, want ErrTruncatedFrame", err)
	}
	if cap(fr.buf) > minBodyGrowBytes {
		t.Fatalf("buffer grew to %d bytes for 1000 received", cap(fr.buf))
	}
}

// TestFrameReader_ReleasesLargeBuffers checks a connection does not keep a large buffer.
func TestFrameReader_ReleasesLargeBuffers(t *testing.T) {
	fr := newFrameReader(newMsgpackHandle(), DefaultMaxFrameBytes)
	frame := encodeFrame(t, frameAppendEntries, appendReq(1, 0, 40, 64<<10))
	if _, _, err := fr.readFrame(bytes.NewReader(frame)); err != nil {
		t.Fatal(err)
	}
	fr.release()
	if fr.buf != nil {
		t.Fatalf("kept a %d byte buffer after a large frame", cap(fr.buf))
	}
}

// TestFrameReader_CleanEOF distinguishes a connection closed between frames from one closed
// inside a frame.
func TestFrameReader_CleanEOF(t *testing.T) {
	fr := newFrameReader(newMsgpackHandle(), DefaultMaxFrameBytes)
	if _, _, err := fr.readFrame(bytes.NewReader(nil)); err != io.EOF {
		t.Fatalf("empty stream: err = %v, want io.EOF", err)
	}
	if _, _, err := fr.readFrame(bytes.NewReader([]byte{1})); !errors.Is(err, ErrTruncatedFrame) {
		t.Fatalf("one byte: err = %v, want ErrTruncatedFrame", err)
	}
}

// TestFrameWriter_EncodingDoesNotAllocatePerEntry checks the steady-state encoder allocates
// nothing, whatever the number of entries.
func TestFrameWriter_EncodingDoesNotAllocatePerEntry(t *testing.T) {
	fw := newFrameWriter(newMsgpackHandle(), DefaultMaxFrameBytes)
	bw := bufio.NewWriter(io.Discard)
	for _, n := range []int{1, 64, 512} {
		req := appendReq(3, 10, n, 128)
		allocs := testing.AllocsPerRun(50, func() {
			if err := fw.writeFrame(bw, frameAppendEntries, req); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 0 {
			t.Errorf("%d entries: %.1f allocations per encode, want 0", n, allocs)
		}
	}
}

// TestValidateAppendEntries lists what a leader never sends.
func TestValidateAppendEntries(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*raft.AppendEntriesRequest)
		valid bool
	}{
		{"valid", func(*raft.AppendEntriesRequest) {}, true},
		{"heartbeat", func(r *raft.AppendEntriesRequest) { r.Entries = nil }, true},
		{"nil_entry", func(r *raft.AppendEntriesRequest) { r.Entries[1] = nil }, false},
		{"unknown_type", func(r *raft.AppendEntriesRequest) { r.Entries[0].Type = 99 }, false},
		{"zero_type", func(r *raft.AppendEntriesRequest) { r.Entries[2].Type = 0 }, false},
		{"index_gap", func(r *raft.AppendEntriesRequest) { r.Entries[2].Index++ }, false},
		{"index_not_after_prev", func(r *raft.AppendEntriesRequest) { r.PrevLogIndex = 3 }, false},
		{"term_above_request", func(r *raft.AppendEntriesRequest) { r.Entries[2].Term = 6 }, false},
		{"term_below_prev", func(r *raft.AppendEntriesRequest) { r.Entries[0].Term = 3 }, false},
		{"term_decreases", func(r *raft.AppendEntriesRequest) { r.Entries[1].Term = 5; r.Entries[2].Term = 4 }, false},
		{"index_wraps", func(r *raft.AppendEntriesRequest) { r.PrevLogIndex = 1<<64 - 1 }, false},
	}
	for _, c := range cases {
		req := appendReq(5, 10, 3, 4)
		req.PrevLogTerm = 4
		c.edit(req)
		err := validateAppendEntries(req)
		if (err == nil) != c.valid || (err != nil && !errors.Is(err, raft.ErrBadRequest)) {
			t.Errorf("%s: err = %v, want valid=%v", c.name, err, c.valid)
		}
	}
}

// TestFrameType_Names checks every type has a readable name for logs.
func TestFrameType_Names(t *testing.T) {
	want := map[frameType]string{
		frameAppendEntries: "append_entries", frameTimeoutNow | responseFlag: "timeout_now_response",
		frameReadIndex: "read_index", frameReadIndex | responseFlag: "read_index_response",
		frameError: "error", 0x42: "unknown(0x42)", 0x80: "unknown(0x80)",
	}
	for typ, name := range want {
		if got := typ.String(); got != name {
			t.Errorf("%#x: %q, want %q", uint8(typ), got, name)
		}
	}
}

// fuzzSeeds returns valid frames of every type plus a few broken ones.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	add := func(typ frameType, v any) { seeds = append(seeds, encodeFrame(t, typ, v)) }
	add(frameAppendEntries, appendReq(2, 7, 3, 5))
	add(frameAppendEntries, appendReq(2, 0, 0, 0))
	add(frameRequestVote, &raft.RequestVoteRequest{Term: 4, LastLogIndex: 9, LeadershipTransfer: true})
	add(frameRequestPreVote, &raft.RequestPreVoteRequest{Term: 4})
	add(frameInstallSnapshot, &raft.InstallSnapshotRequest{Term: 4, Size: 3, Configuration: []byte{1, 2}})
	add(frameTimeoutNow, &raft.TimeoutNowRequest{Term: 4})
	add(frameReadIndex, &raft.ReadIndexRequest{Term: 4, Lease: true, Reads: 3})
	add(frameAppendEntries|responseFlag, &raft.AppendEntriesResponse{Term: 4, Success: true, ConflictIndex: 3})
	add(frameError, "raft: malformed request: entry 0 is nil")
	seeds = append(seeds,
		nil,
		rawHeader(frameKeepalive, 0),
		[]byte{0x01},
		rawHeader(frameAppendEntries, 1<<31),
		append(rawHeader(frameRequestVote, 3), 0xc1, 0xc1, 0xc1),
		append(rawHeader(frameAppendEntries, 6), 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00), // array of 2^32-1 elements
		append(rawHeader(frameAppendEntries, 5), 0xdb, 0x7f, 0xff, 0xff, 0xff),       // string of 2 GiB
		append(rawHeader(frameAppendEntries, 3), 0x81, 0xa1, 'x'),                    // map with a key and no value
	)
	return seeds
}

// fuzzMaxFrameBytes keeps fuzzed frames small so each input runs fast.
const fuzzMaxFrameBytes = 64 << 10

// FuzzFrameDecoder feeds arbitrary bytes to the frame reader and the decoders of both sides.
// It must never panic, never return a body above the limit, and every request it accepts
// must be safe for the node (validated).
func FuzzFrameDecoder(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	h := newMsgpackHandle()
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(h, fuzzMaxFrameBytes)
		r := bytes.NewReader(data)
		for i := 0; i < 8; i++ { // a few frames per input
			typ, body, err := fr.readFrame(r)
			if err != nil {
				return
			}
			if len(body) > fuzzMaxFrameBytes {
				t.Fatalf("body of %d bytes above the %d limit", len(body), fuzzMaxFrameBytes)
			}
			if typ.isRequest() {
				checkDecodedRequest(t, &fr, typ, body)
				continue
			}
			if req := typ &^ responseFlag; req.isRequest() {
				fr.decode(body, reflect.New(responseTypes()[req]).Interface())
			}
		}
	})
}

// checkDecodedRequest decodes a request body and checks an accepted request is safe.
func checkDecodedRequest(t *testing.T, fr *frameReader, typ frameType, body []byte) {
	cmd, err := decodeRequest(fr, typ, body)
	if err != nil {
		return
	}
	switch req := cmd.(type) {
	case *raft.AppendEntriesRequest:
		for _, e := range req.Entries {
			if e == nil || !e.Type.Valid() {
				t.Fatalf("accepted a bad entry: %+v", e)
			}
		}
	case *raft.InstallSnapshotRequest:
		if req.Size < 0 {
			t.Fatalf("accepted snapshot size %d", req.Size)
		}
	}
}

// responseTypes maps request frame types to their response struct types.
func responseTypes() map[frameType]reflect.Type {
	return map[frameType]reflect.Type{
		frameAppendEntries:   reflect.TypeOf(raft.AppendEntriesResponse{}),
		frameRequestVote:     reflect.TypeOf(raft.RequestVoteResponse{}),
		frameRequestPreVote:  reflect.TypeOf(raft.RequestPreVoteResponse{}),
		frameInstallSnapshot: reflect.TypeOf(raft.InstallSnapshotResponse{}),
		frameTimeoutNow:      reflect.TypeOf(raft.TimeoutNowResponse{}),
		frameReadIndex:       reflect.TypeOf(raft.ReadIndexResponse{}),
	}
}

// FuzzAppendEntriesRoundTrip encodes AppendEntries built from fuzzed fields and checks the
// decoder returns exactly what was encoded.
func FuzzAppendEntriesRoundTrip(f *testing.F) {
	f.Add(uint64(3), uint64(10), uint8(2), []byte("data"), []byte("ext"))
	f.Add(uint64(0), uint64(0), uint8(0), []byte{}, []byte(nil))
	f.Add(uint64(1<<63), uint64(1<<64-2), uint8(1), bytes.Repeat([]byte{0xc1}, 300), []byte{0})
	h := newMsgpackHandle()
	f.Fuzz(func(t *testing.T, term, prev uint64, n uint8, data, ext []byte) {
		req := &raft.AppendEntriesRequest{Term: term, PrevLogIndex: prev, PrevLogTerm: term, LeaderCommitIndex: prev / 2}
		for i := 0; i < int(n%8); i++ {
			req.Entries = append(req.Entries, &raft.Log{Index: prev + 1 + uint64(i), Term: term, Type: raft.LogCommand, Data: data, Extensions: ext})
		}
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		fw := newFrameWriter(h, DefaultMaxFrameBytes)
		if err := fw.writeFrame(bw, frameAppendEntries, req); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		fr := newFrameReader(h, DefaultMaxFrameBytes)
		typ, body, err := fr.readFrame(&out)
		if err != nil || typ != frameAppendEntries {
			t.Fatalf("readFrame: %s, %v", typ, err)
		}
		got := new(raft.AppendEntriesRequest)
		if err := fr.decode(body, got); err != nil {
			t.Fatal(err)
		}
		if !sameAppend(got, req) {
			t.Fatalf("round trip changed the request:\n got %+v\nwant %+v", got, req)
		}
	})
}

// sameAppend compares requests, treating nil and empty byte slices alike (msgpack does not
// keep the difference).
func sameAppend(a, b *raft.AppendEntriesRequest) bool {
	if a.RPCHeader != b.RPCHeader || a.Term != b.Term || a.PrevLogIndex != b.PrevLogIndex ||
		a.PrevLogTerm != b.PrevLogTerm || a.LeaderCommitIndex != b.LeaderCommitIndex || len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		x, y := a.Entries[i], b.Entries[i]
		if x.Index != y.Index || x.Term != y.Term || x.Type != y.Type ||
			!bytes.Equal(x.Data, y.Data) || !bytes.Equal(x.Extensions, y.Extensions) {
			return false
		}
	}
	return true
}
