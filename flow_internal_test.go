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

func cacheLog(index uint64, size int) *Log {
	return &Log{Index: index, Term: 1, Type: LogCommand, Data: make([]byte, size)}
}

func cachedRange(c *logCache) (first, last uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.entries) == 0 {
		return 0, 0
	}
	return c.entries[0].Index, c.entries[len(c.entries)-1].Index
}

func TestLogCache_KeepsUndurableEntriesAndEvictsDurableOnesByBytes(t *testing.T) {
	per := entryBytes(cacheLog(0, 100))
	c := newLogCache(3 * per)
	for i := uint64(1); i <= 10; i++ {
		c.add([]*Log{cacheLog(i, 100)})
	}
	want := func(what string, first, last uint64) {
		t.Helper()
		if f, l := cachedRange(c); f != first || l != last {
			t.Fatalf("%s: cache holds [%d, %d], want [%d, %d]", what, f, l, first, last)
		}
		for i := first; i <= last && first > 0; i++ {
			if e := c.get(i); e == nil || e.Index != i {
				t.Fatalf("%s: get(%d) = %v", what, i, e)
			}
		}
		if c.get(first-1) != nil || c.get(last+1) != nil {
			t.Fatalf("%s: get outside [%d, %d] found an entry", what, first, last)
		}
	}
	want("nothing durable, over budget", 1, 10)
	c.markDurable(6)
	want("durable up to 6", 7, 10) // 7..10 are over budget but not durable
	c.markDurable(10)
	want("all durable", 8, 10)
	c.dropThrough(8)
	want("handed over up to 8", 9, 10)
	// A follower's suffix from 10 on was replaced.
	c.add([]*Log{{Index: 10, Term: 2}, {Index: 11, Term: 2}})
	want("suffix replaced", 9, 11)
	if c.get(10).Term != 2 {
		t.Fatal("the replaced entry is still cached")
	}
	c.truncateFrom(11)
	want("truncated from 11", 9, 10)
	// A gap empties the cache.
	c.add([]*Log{cacheLog(20, 1)})
	want("after a gap", 20, 20)
	c.truncateFrom(0)
	if f, _ := cachedRange(c); f != 0 || c.get(20) != nil {
		t.Fatal("truncateFrom(0) left entries")
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.bytes != 0 {
		t.Fatalf("empty cache counts %d bytes", c.bytes)
	}
}

func TestFSMQueue_HoldsBackByBytesToo(t *testing.T) {
	task := func(n, size int) fsmTask {
		var t fsmTask
		for i := 0; i < n; i++ {
			t.commits = append(t.commits, commitTuple{log: &Log{Data: make([]byte, size)}})
		}
		return t
	}
	per := entryBytes(&Log{Data: make([]byte, 1000)})
	q := newFSMQueue(1000, 4*per)
	q.push(task(2, 1000))
	if q.full() {
		t.Fatal("full with 2 of 1000 entries and half the bytes")
	}
	q.push(task(2, 1000))
	if !q.full() {
		t.Fatal("not full with the byte limit reached (4 of 1000 entries)")
	}
	first, _ := q.next()
	q.done(first)
	select {
	case <-q.room:
	default:
		t.Fatal("no room signalled once half the bytes were free")
	}
	if q.full() {
		t.Fatal("still full after half was applied")
	}
}
