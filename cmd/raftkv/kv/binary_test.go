package kv

import (
	"bytes"
	"errors"
	"flag"
	"math/rand"
	"testing"
	"time"

	"github.com/raftkit/raft"
)

var binarySeed = flag.Int64("binary_seed", 0, "seed of the random binary key/value tests (0: time-based)")

// randomBytes returns n random bytes, biased toward the bytes JSON and UTF-8 mangle.
func randomBytes(rng *rand.Rand, n int) string {
	special := []byte{0x00, 0x22, 0x5c, 0x7b, 0x80, 0xc0, 0xfe, 0xff, '\n', '/', '%'}
	b := make([]byte, n)
	for i := range b {
		if rng.Intn(4) == 0 {
			b[i] = special[rng.Intn(len(special))]
		} else {
			b[i] = byte(rng.Intn(256))
		}
	}
	return string(b)
}

func seededRand(t *testing.T) *rand.Rand {
	seed := *binarySeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay with -binary_seed=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

func TestCommand_BinaryRoundTrip(t *testing.T) {
	rng := seededRand(t)
	for i := 0; i < 2000; i++ {
		c := Command{Op: []Op{OpSet, OpDelete, OpRegister}[rng.Intn(3)], Key: randomBytes(rng, 1+rng.Intn(300))}
		if c.Op != OpDelete {
			c.Value = randomBytes(rng, rng.Intn(3000))
		}
		enc := c.Encode()
		if overhead := len(enc) - len(c.Key) - len(c.Value); overhead > 4 {
			t.Fatalf("entry overhead %d bytes for a %d-byte key", overhead, len(c.Key))
		}
		got, err := DecodeCommand(enc)
		if err != nil || got != c {
			t.Fatalf("round trip of %+q: got %+q, %v", c, got, err)
		}
	}
}

func TestCommand_ReadsOlderJSONEntries(t *testing.T) {
	got, err := DecodeCommand([]byte(`{"op":"set","key":"a","value":"b"}`))
	if err != nil || got != (Command{Op: OpSet, Key: "a", Value: "b"}) {
		t.Fatalf("JSON entry: %+v, %v", got, err)
	}
}

func TestCommand_DecodeRefusesMalformed(t *testing.T) {
	good := Command{Op: OpSet, Key: "k", Value: "v"}.Encode()
	cases := map[string][]byte{
		"empty":           nil,
		"unknown version": {9, 1, 1, 'k'},
		"no op":           {commandVersion},
		"unknown op":      {commandVersion, 9, 1, 'k'},
		"no key length":   {commandVersion, 1},
		"key too long":    {commandVersion, 1, 5, 'k'},
		"empty key":       {commandVersion, 1, 0, 'v'},
		"delete value":    {commandVersion, 2, 1, 'k', 'v'},
		"bad varint":      {commandVersion, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"bad json":        []byte(`{"op":`),
		"truncated":       good[:2],
	}
	for name, data := range cases {
		if _, err := DecodeCommand(data); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: DecodeCommand = %v, want ErrBadCommand", name, err)
		}
	}
}

// TestFSM_BinaryKeysAndValuesSurviveSnapshotAndRestore applies random binary keys and values,
// snapshots, restores into a fresh FSM and compares every byte.
func TestFSM_BinaryKeysAndValuesSurviveSnapshotAndRestore(t *testing.T) {
	rng := seededRand(t)
	f := NewFSM()
	want := make(map[string]string)
	for i := uint64(1); i <= 500; i++ {
		k, v := randomBytes(rng, 1+rng.Intn(64)), randomBytes(rng, rng.Intn(4096))
		apply(t, f, i, Command{Op: OpSet, Key: k, Value: v})
		want[k] = v
	}
	// One large value, and keys that differ only in bytes JSON would turn into U+FFFD.
	big := randomBytes(rng, 1<<20)
	apply(t, f, 501, Command{Op: OpSet, Key: "big", Value: big})
	apply(t, f, 502, Command{Op: OpSet, Key: "\xfe", Value: "fe"})
	apply(t, f, 503, Command{Op: OpSet, Key: "\xff", Value: "ff"})
	apply(t, f, 504, Command{Op: OpRegister, Key: "n\xff", Value: "127.0.0.1:1"})
	want["big"], want["\xfe"], want["\xff"] = big, "fe", "ff"
	snap, _ := f.Snapshot()
	data := persist(t, snap)
	if len(data) > len(big)+600*(4096+64+8) {
		t.Fatalf("snapshot of %d bytes is larger than its content allows", len(data))
	}
	r := restored(t, data)
	if r.Len() != len(want) {
		t.Fatalf("restored %d keys, want %d", r.Len(), len(want))
	}
	for k, v := range want {
		if got, ok := r.Get(k); !ok || got != v {
			t.Fatalf("key %q: restored %d bytes (found %v), want %d bytes", k, len(got), ok, len(v))
		}
	}
	if addr, ok := r.MemberHTTP(raft.ServerID("n\xff")); !ok || addr != "127.0.0.1:1" {
		t.Fatalf("member: %q %v", addr, ok)
	}
	// Equal states persist to equal bytes.
	snap2, _ := r.Snapshot()
	if !bytes.Equal(persist(t, snap2), data) {
		t.Fatal("persisting the restored state gave different bytes")
	}
}
