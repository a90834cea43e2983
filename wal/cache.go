package wal

import "github.com/raftkit/raft"

// maxCachedBatchBytes bounds the encoded batch the cache may keep alive: a larger batch is
// not cached, so a few huge entries cannot pin a lot of memory.
const maxCachedBatchBytes = 8 << 20

// cachedEntry is one recently appended entry. data and ext alias the encoded batch buffer,
// which nothing writes to once the batch is on disk.
type cachedEntry struct {
	index uint64 // 0 marks an empty slot
	term  uint64
	typ   raft.LogType
	data  []byte
	ext   []byte
}

// recentCache is a ring of the most recently appended entries, slot index%len. It is guarded
// by Store.mu. It never needs invalidating: lookups are range-checked against the log bounds
// first, and every append overwrites (or, for a batch too large to cache, empties) the slot
// of each index it writes, so a slot whose index is inside the bounds always holds the
// current entry.
type recentCache struct {
	slots []cachedEntry
}

func newRecentCache(n int) recentCache { return recentCache{slots: make([]cachedEntry, n)} }

// enabled reports whether the cache holds anything at all.
func (c *recentCache) enabled() bool { return len(c.slots) > 0 }

// put records an entry whose bytes alias an immutable buffer.
func (c *recentCache) put(e cachedEntry) {
	c.slots[e.index%uint64(len(c.slots))] = e
}

// forget empties the slot of index if it holds that index. An append that does not cache its
// entries calls it for each one, so a slot left from an entry truncated away cannot be served
// for the new entry at the same index.
func (c *recentCache) forget(index uint64) {
	if !c.enabled() {
		return
	}
	if e := &c.slots[index%uint64(len(c.slots))]; e.index == index {
		*e = cachedEntry{}
	}
}

// get returns the entry at index, if cached. The caller range-checked index.
func (c *recentCache) get(index uint64) (cachedEntry, bool) {
	if !c.enabled() {
		return cachedEntry{}, false
	}
	e := c.slots[index%uint64(len(c.slots))]
	return e, e.index == index
}

// fill copies the entry into l with freshly allocated bytes the caller owns.
func (e *cachedEntry) fill(l *raft.Log) {
	*l = raft.Log{Index: e.index, Term: e.term, Type: e.typ}
	if len(e.data)+len(e.ext) == 0 {
		return
	}
	buf := make([]byte, len(e.data)+len(e.ext))
	d := copy(buf, e.data)
	copy(buf[d:], e.ext)
	if len(e.data) > 0 {
		l.Data = buf[:d:d]
	}
	if len(e.ext) > 0 {
		l.Extensions = buf[d:]
	}
}
