package raft_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// Tests of the byte limits on the write path: oversized entries, configuration checks and
// how repeated replication failures are reported.

func TestApply_EntryAboveMaxEntryBytesFailsAtOnceAndIsNotApplied(t *testing.T) {
	const limit = 4 << 10
	opts := raftest.Options{Nodes: 3, Config: func(c *raft.Config) { c.MaxEntryBytes = limit }}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		r := c.Node(leader).Raft()
		before := r.LastIndex()
		calls := map[string]func() raft.ApplyFuture{
			"Apply":        func() raft.ApplyFuture { return r.Apply(make([]byte, limit+1), time.Hour) },
			"ApplyContext": func() raft.ApplyFuture { return r.ApplyContext(context.Background(), make([]byte, limit+1)) },
			// Data and Extensions count together.
			"ApplyLog": func() raft.ApplyFuture {
				return r.ApplyLog(raft.Log{Data: make([]byte, limit/2), Extensions: make([]byte, limit/2+1)}, 0)
			},
		}
		for name, call := range calls {
			var err error
			start := time.Now()
			if !within(time.Second, func() { err = call().Error() }) || time.Since(start) != 0 {
				t.Fatalf("%s of an oversized entry did not fail at once", name)
			}
			if !errors.Is(err, raft.ErrEntryTooLarge) {
				t.Fatalf("%s of an oversized entry: %v, want ErrEntryTooLarge", name, err)
			}
		}
		if got := r.LastIndex(); got != before {
			t.Fatalf("oversized entries reached the log: last index %d, was %d", got, before)
		}
		// An entry of exactly the limit is fine.
		f, err := c.Apply(bytes.Repeat([]byte{'x'}, limit), waitLong)
		if err != nil {
			t.Fatalf("entry of exactly MaxEntryBytes: %v", err)
		}
		c.WaitApplied(f.Index(), waitLong)
		for i := range c.Nodes() {
			if n := len(recorded(c, i)); n != 1 {
				t.Fatalf("node %d applied %d commands, want only the one within the limit", i, n)
			}
		}
	})
}

func TestDefaultConfig_OneMiBValueFits(t *testing.T) {
	conf := raft.DefaultConfig()
	// A 1 MiB value with its key and the application's encoding around it.
	if conf.MaxEntryBytes < 1<<20+64<<10 {
		t.Fatalf("default MaxEntryBytes %d leaves no room for a 1 MiB value", conf.MaxEntryBytes)
	}
}

func TestValidateConfig_ByteLimits(t *testing.T) {
	checkInvalidConfigs(t, []invalidConfig{
		{"zero MaxEntryBytes", func(c *raft.Config) { c.MaxEntryBytes = 0 }, "MaxEntryBytes"},
		{"zero MaxAppendEntriesBytes", func(c *raft.Config) { c.MaxAppendEntriesBytes = 0 }, "MaxAppendEntriesBytes"},
		{"zero MaxInflightBytes", func(c *raft.Config) { c.MaxInflightBytes = 0 }, "MaxInflightBytes"},
		{"window below one request", func(c *raft.Config) { c.MaxInflightBytes = c.MaxAppendEntriesBytes - 1 }, "MaxInflightBytes"},
	})
}

// lineCounter collects log lines for assertions.
type lineCounter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns how many lines hold every one of parts.
func (l *lineCounter) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.buf.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func TestReplication_RepeatedFailureWarnsOncePerChangeOfState(t *testing.T) {
	logs := &lineCounter{}
	opts := raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Debug, Output: logs})
	}}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		follower := others(c, leader)[0]
		peer := string(c.Node(follower).ID)
		c.Net.Cut(c.Node(leader).Addr, c.Node(follower).Addr)
		if _, err := c.Apply([]byte("while cut"), waitLong); err != nil {
			t.Fatal(err)
		}
		// Many retries later (virtual time), still one warning.
		c.WaitFor(waitLong, "repeated replication failures", func() bool {
			return logs.count("[DEBUG]", "replication to peer failed", "peer="+peer) >= 10
		})
		if n := logs.count("[WARN]", "replication to peer failed", "peer="+peer); n != 1 {
			t.Fatalf("%d warnings for one run of failures, want 1", n)
		}
		c.Net.Heal()
		f, err := c.Apply([]byte("after heal"), waitLong)
		if err != nil {
			t.Fatal(err)
		}
		c.WaitApplied(f.Index(), waitLong)
		c.WaitFor(waitLong, "the recovery to be logged", func() bool {
			return logs.count("[INFO]", "replication to peer resumed", "peer="+peer) == 1
		})
	})
}

func TestLeader_StopsTakingAppliesWhileTooMuchIsUncommitted(t *testing.T) {
	const (
		window    = 8 << 10 // MaxAppendEntriesBytes and MaxInflightBytes
		entrySize = 1 << 10
	)
	opts := withHangingStores(raftest.Options{Nodes: 3, Config: func(c *raft.Config) {
		c.MaxAppendEntriesBytes, c.MaxInflightBytes = window, window
	}})
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		leader := c.WaitLeader(waitLong)
		if _, err := c.Apply([]byte("settled"), waitLong); err != nil {
			t.Fatal(err)
		}
		r := c.Node(leader).Raft()
		for _, i := range others(c, leader) {
			hangingStoreOf(t, c, i).Hang() // no follower acknowledges anything from now on
		}
		base := r.LastIndex()
		for i := 0; i < 200; i++ {
			go func() { _ = r.Apply(make([]byte, entrySize), time.Hour).Error() }()
		}
		synctest.Wait() // every goroutine blocked: the leader took what it takes
		// Four windows of uncommitted bytes, plus the one batch that crossed the bound.
		perEntry := entrySize + 64
		most := uint64(4*window/perEntry + window/perEntry + 2)
		if got := r.LastIndex() - base; got > most || got < most/2 {
			t.Fatalf("leader took %d entries with no follower acknowledging, want about %d (at most %d)", got, 4*window/perEntry, most)
		}
	})
}
