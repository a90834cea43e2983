package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

func TestRecord_RoundTrip(t *testing.T) {
	for _, l := range []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand},
		storetest.MakeLog(3, 7, 100), // with extensions
		storetest.MakeLog(4, 7, 0),
		storetest.MakeLog(1<<40, 1<<50, 4096),
	} {
		buf := appendRecord([]byte("prefix"), l)
		var got raft.Log
		n, err := decodeRecord(buf[len("prefix"):], &got)
		if err != nil || n != recordBytes(l) || !storetest.EqualLog(&got, l) {
			t.Fatalf("decode(encode(%d)) = %+v, %d, %v", l.Index, got, n, err)
		}
		if cap(got.Data) != len(got.Data) {
			t.Fatalf("decoded Data has spare capacity %d; appending to it would overwrite Extensions", cap(got.Data))
		}
	}
}

func TestRecord_DecodeRejectsDamage(t *testing.T) {
	good := appendRecord(nil, storetest.MakeLog(5, 2, 64))
	var l raft.Log
	for cut := 0; cut < len(good); cut++ {
		if _, err := decodeRecord(good[:cut], &l); !errors.Is(err, errShortRecord) {
			t.Fatalf("decode of the first %d bytes: %v, want errShortRecord", cut, err)
		}
	}
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x40
		if _, err := decodeRecord(bad, &l); err == nil {
			t.Fatalf("decode with byte %d flipped succeeded", i)
		}
	}
}

func TestRecord_HugeLengthIsBoundedNotAllocated(t *testing.T) {
	buf := appendRecord(nil, storetest.MakeLog(5, 2, 8))
	binary.LittleEndian.PutUint32(buf[4:8], 0xFFFFFFF0) // a corrupt data length of ~4 GiB
	var l raft.Log
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := decodeRecord(buf, &l); err == nil {
		t.Fatal("decode with a huge length succeeded")
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("decode of a corrupt length allocated %d bytes", grew)
	}
}

func TestSegmentHeader_RoundTripAndDamage(t *testing.T) {
	hdr := appendSegmentHeader(nil, 77)
	if len(hdr) != segmentHeaderBytes || checkSegmentHeader(hdr, 77) != nil {
		t.Fatalf("header of %d bytes does not verify", len(hdr))
	}
	if checkSegmentHeader(hdr, 78) == nil {
		t.Fatal("header verified against the wrong base index")
	}
	for i := range hdr {
		bad := bytes.Clone(hdr)
		bad[i] ^= 1
		if checkSegmentHeader(bad, 77) == nil {
			t.Fatalf("header with byte %d flipped verified", i)
		}
	}
}

// FuzzDecodeRecord checks that the decoder never panics or over-reads on arbitrary input, and
// that whatever it accepts re-encodes to exactly the bytes it consumed. The seed corpus runs
// in every normal test run.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, storetest.MakeLog(1, 1, 0)))
	f.Add(appendRecord(nil, storetest.MakeLog(3, 9, 40)))
	f.Add(appendRecord(appendRecord(nil, storetest.MakeLog(6, 1, 5)), storetest.MakeLog(7, 1, 5)))
	f.Add(appendRecord(nil, storetest.MakeLog(2, 2, 30))[:20])
	f.Add(make([]byte, recordHeaderBytes))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, buf []byte) {
		var l raft.Log
		n, err := decodeRecord(buf, &l)
		if err != nil {
			return
		}
		if n > len(buf) {
			t.Fatalf("decode consumed %d of %d bytes", n, len(buf))
		}
		if again := appendRecord(nil, &l); !bytes.Equal(again, buf[:n]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", again, buf[:n])
		}
	})
}

// FuzzDecodeStable checks the stable-file decoder the same way: no panic on any input, and an
// accepted payload re-encodes to the same bytes.
func FuzzDecodeStable(f *testing.F) {
	p, _ := encodeStable(map[string][]byte{"CurrentTerm": {0, 0, 0, 0, 0, 0, 0, 5}}, "LastVote", []byte("x"))
	f.Add(p)
	f.Add([]byte(stableMagic + "\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		kv, err := decodeStable(payload)
		if err != nil || len(kv) == 0 {
			return
		}
		var key string
		for k := range kv {
			key = k
			break
		}
		again, err := encodeStable(kv, key, kv[key])
		if err != nil || !bytes.Equal(again, payload) {
			t.Fatalf("re-encoding differs or fails (%v):\n got %x\nwant %x", err, again, payload)
		}
	})
}
