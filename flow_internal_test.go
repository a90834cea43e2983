package raft

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

func encodedLen(t *testing.T, v any) int {
	t.Helper()
	var buf bytes.Buffer
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{WriteExt: true}).Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Len()
}

func TestLogOverheadBytes_BoundsTheEncoding(t *testing.T) {
	for _, size := range []int{0, 1, 31, 255, 256, 65535, 65536, 1 << 20} {
		l := &Log{Index: math.MaxUint64, Term: math.MaxUint64, Type: LogType(255),
			Data: make([]byte, size), Extensions: make([]byte, size)}
		if got := encodedLen(t, l) - 2*size; got > logOverheadBytes {
			t.Fatalf("a log with %d-byte data and extensions encodes with %d bytes of overhead, logOverheadBytes is %d", size, got, logOverheadBytes)
		}
	}
}

func TestAppendOverheadBytes_BoundsTheEncoding(t *testing.T) {
	for _, n := range []int{0, 1, 40, 300} {
		id, addr := ServerID(strings.Repeat("i", n)), ServerAddress(strings.Repeat("a", 2*n))
		req := &AppendEntriesRequest{
			RPCHeader: RPCHeader{ProtocolVersion: math.MaxInt, ID: id, Addr: addr},
			Term:      math.MaxUint64, PrevLogIndex: math.MaxUint64, PrevLogTerm: math.MaxUint64,
			LeaderCommitIndex: math.MaxUint64,
		}
		payload := 0
		for i := 0; i < 100; i++ {
			l := &Log{Index: math.MaxUint64, Term: math.MaxUint64, Type: LogCommand, Data: make([]byte, 70000)}
			req.Entries = append(req.Entries, l)
			payload += entryBytes(l)
		}
		if got := encodedLen(t, req) - payload; got > appendOverheadBytes(id, addr) {
			t.Fatalf("with %d-byte ID: %d bytes of request overhead, appendOverheadBytes is %d", n, got, appendOverheadBytes(id, addr))
		}
	}
}

func TestByteBudget_CountsBytesAndEntriesAndAdmitsOneAlways(t *testing.T) {
	b := byteBudget{maxEntries: 3, maxBytes: 100}
	if !b.admit(500) {
		t.Fatal("the first entry must be admitted even above the byte bound")
	}
	if b.admit(1) {
		t.Fatal("an entry after an oversized one was admitted")
	}
	b = byteBudget{maxEntries: 3, maxBytes: 100}
	for i, want := range []bool{true, true, true, false} {
		if got := b.admit(10); got != want {
			t.Fatalf("entry %d: admit %v, want %v", i, got, want)
		}
	}
	b = byteBudget{maxEntries: 10, maxBytes: 100}
	for i, want := range []bool{true, true, false} {
		if got := b.admit(45); got != want {
			t.Fatalf("45-byte entry %d: admit %v, want %v", i, got, want)
		}
	}
}
