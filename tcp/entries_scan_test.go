package tcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/raftkit/raft"
)

// hostileEntries encodes {"Entries": [n empty maps]}: n one-byte entries.
func hostileEntries(n int) []byte {
	var b bytes.Buffer
	b.WriteByte(0x81)
	b.WriteByte(0xa0 | byte(len("Entries")))
	b.WriteString("Entries")
	b.WriteByte(0xdd)
	var cnt [4]byte
	binary.BigEndian.PutUint32(cnt[:], uint32(n))
	b.Write(cnt[:])
	b.Write(bytes.Repeat([]byte{0x80}, n))
	return b.Bytes()
}

func encodeAppend(t *testing.T, req *raft.AppendEntriesRequest) []byte {
	t.Helper()
	var out []byte
	if err := codec.NewEncoderBytes(&out, newMsgpackHandle()).Encode(req); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCheckEntriesCount_RefusesMillionsOfTinyEntriesWithoutDecoding(t *testing.T) {
	body := hostileEntries(5_000_000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fr := newFrameReader(newMsgpackHandle(), DefaultMaxFrameBytes)
	_, err := decodeRequest(&fr, frameAppendEntries, body)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformedFrame) {
		t.Fatalf("decode of 5M tiny entries: %v, want ErrMalformedFrame", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("refusing the frame allocated %d bytes", grew)
	}
}

func TestCheckEntriesCount_AcceptsRealRequests(t *testing.T) {
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 1, ID: "a", Addr: "b"},
		Term:      3, PrevLogIndex: 10, PrevLogTerm: 2, LeaderCommitIndex: 9,
	}
	for i := 0; i < 1024; i++ {
		req.Entries = append(req.Entries, &raft.Log{Index: uint64(11 + i), Term: 3, Type: raft.LogCommand, Data: []byte("payload"), Extensions: []byte{1}})
	}
	if err := checkEntriesCount(encodeAppend(t, req)); err != nil {
		t.Fatalf("a real 1024-entry request: %v", err)
	}
	req.Entries = nil
	if err := checkEntriesCount(encodeAppend(t, req)); err != nil {
		t.Fatalf("a heartbeat: %v", err)
	}
}

func TestCheckEntriesCount_RefusesWhatItCannotWalk(t *testing.T) {
	for name, body := range map[string][]byte{
		"empty":         {},
		"not a map":     {0x93, 1, 2, 3},
		"truncated key": {0x81, 0xa7, 'E', 'n'},
		"bad byte":      {0x81, 0xa1, 'x', 0xc1},
		"deep nesting":  append([]byte{0x81, 0xa1, 'x'}, bytes.Repeat([]byte{0x91}, 64)...),
	} {
		if err := checkEntriesCount(body); !errors.Is(err, ErrMalformedFrame) {
			t.Errorf("%s: %v, want ErrMalformedFrame", name, err)
		}
	}
}

func FuzzCheckEntriesCount(f *testing.F) {
	f.Add(hostileEntries(3))
	f.Add([]byte{0x80})
	f.Add([]byte{0x81, 0xa7, 'E', 'n', 't', 'r', 'i', 'e', 's', 0x90})
	f.Fuzz(func(t *testing.T, body []byte) {
		_ = checkEntriesCount(body) // must never panic
	})
}
