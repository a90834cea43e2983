package raft

import "sync"

// logCache holds a run of recent entries with consecutive indexes, bounded by bytes.
//
// The leader keeps one per term so replication can send entries the local writer has not made
// durable yet (those are never evicted: the writer's backlog bounds them) and, within the byte
// budget, recently written ones without reading the store. A follower keeps one of the entries
// it just stored, so it applies them once committed without reading them back.
//
// The main loop adds and trims; replication goroutines read. Entries are never modified once
// cached, so readers may share the pointers.
type logCache struct {
	maxBytes int // budget of entryBytes for entries at or below durable

	mu      sync.RWMutex
	entries []*Log // guarded by mu; entries[i].Index == entries[0].Index + i
	bytes   int    // guarded by mu; entryBytes of entries
	durable uint64 // guarded by mu; entries above it are kept whatever the budget
}

func newLogCache(maxBytes int) *logCache { return &logCache{maxBytes: maxBytes} }

// add caches entries with consecutive indexes. An entry at or below the cached tail replaces
// the tail from its index on (a follower's conflicting suffix was cut); a gap empties the
// cache first.
func (c *logCache) add(logs []*Log) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		if n := len(c.entries); n > 0 {
			first := c.entries[0].Index
			switch {
			case l.Index < first || l.Index > first+uint64(n):
				c.truncateLocked(0)
			case l.Index < first+uint64(n):
				c.truncateLocked(int(l.Index - first))
			}
		}
		c.entries = append(c.entries, l)
		c.bytes += entryBytes(l)
	}
	c.evictLocked()
}

// markDurable lets the entries up to index be evicted once over budget.
func (c *logCache) markDurable(index uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.durable = max(c.durable, index)
	c.evictLocked()
}

// dropThrough forgets the entries up to index (a follower handed them to the FSM).
func (c *logCache) dropThrough(index uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for n < len(c.entries) && c.entries[n].Index <= index {
		n++
	}
	c.dropFrontLocked(n)
}

// truncateFrom forgets the entries from index on (0: all of them).
func (c *logCache) truncateFrom(index uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) == 0 {
		return
	}
	first := c.entries[0].Index
	c.truncateLocked(int(min(max(index, first)-first, uint64(len(c.entries)))))
}

// get returns the cached entry at index, or nil.
func (c *logCache) get(index uint64) *Log {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.entries) == 0 || index < c.entries[0].Index {
		return nil
	}
	if i := index - c.entries[0].Index; i < uint64(len(c.entries)) {
		return c.entries[i]
	}
	return nil
}

// truncateLocked keeps the first n entries.
func (c *logCache) truncateLocked(n int) {
	for i := n; i < len(c.entries); i++ {
		c.bytes -= entryBytes(c.entries[i])
		c.entries[i] = nil
	}
	c.entries = c.entries[:n]
	if n == 0 {
		c.entries = nil
	}
}

// evictLocked drops the oldest durable entries while the cache is over budget.
func (c *logCache) evictLocked() {
	n, bytes := 0, c.bytes
	for n < len(c.entries) && bytes > c.maxBytes && c.entries[n].Index <= c.durable {
		bytes -= entryBytes(c.entries[n])
		n++
	}
	c.dropFrontLocked(n)
}

// dropFrontLocked forgets the first n entries.
func (c *logCache) dropFrontLocked(n int) {
	for i := 0; i < n; i++ {
		c.bytes -= entryBytes(c.entries[i])
		c.entries[i] = nil // the array outlives the entries until append reallocates it
	}
	c.entries = c.entries[n:]
	if len(c.entries) == 0 {
		c.entries = nil
	}
}
