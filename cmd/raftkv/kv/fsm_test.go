package kv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/raftkit/raft"
)

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func apply(t *testing.T, f *FSM, index uint64, c Command) Result {
	t.Helper()
	res, ok := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: c.Encode()}).(Result)
	if !ok {
		t.Fatalf("Apply returned a %T, want Result", res)
	}
	return res
}

func persist(t *testing.T, snap raft.FSMSnapshot) []byte {
	t.Helper()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist left the sink closed=%v cancelled=%v, want closed only", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func restored(t *testing.T, data []byte) *FSM {
	t.Helper()
	f := NewFSM()
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return f
}

func wantValue(t *testing.T, f *FSM, key, want string, wantFound bool) {
	t.Helper()
	got, found := f.Get(key)
	if got != want || found != wantFound {
		t.Fatalf("Get(%q) = %q, %v; want %q, %v", key, got, found, want, wantFound)
	}
}

func TestFSM_ApplySetDeleteRegister(t *testing.T) {
	f := NewFSM()
	if res := apply(t, f, 1, Command{Op: OpSet, Key: "a", Value: "1"}); res.Existed || res.Err != nil {
		t.Fatalf("first set: %+v", res)
	}
	if res := apply(t, f, 2, Command{Op: OpSet, Key: "a", Value: "2"}); !res.Existed {
		t.Fatalf("overwrite: %+v, want Existed", res)
	}
	wantValue(t, f, "a", "2", true)
	if res := apply(t, f, 3, Command{Op: OpDelete, Key: "a"}); !res.Existed {
		t.Fatalf("delete: %+v, want Existed", res)
	}
	if res := apply(t, f, 4, Command{Op: OpDelete, Key: "a"}); res.Existed {
		t.Fatalf("second delete: %+v, want not Existed", res)
	}
	wantValue(t, f, "a", "", false)
	apply(t, f, 5, Command{Op: OpRegister, Key: "n1", Value: "127.0.0.1:7001"})
	if addr, ok := f.MemberHTTP("n1"); !ok || addr != "127.0.0.1:7001" {
		t.Fatalf("MemberHTTP = %q, %v", addr, ok)
	}
	if f.Len() != 0 || f.Members() != 1 {
		t.Fatalf("Len = %d, Members = %d; want 0, 1", f.Len(), f.Members())
	}
}

func TestFSM_ApplyRefusesMalformedCommands(t *testing.T) {
	f := NewFSM()
	apply(t, f, 1, Command{Op: OpSet, Key: "k", Value: "v"})
	for _, data := range []string{"", "{", "null", `{"op":"set"}`, `{"op":"drop","key":"k"}`, `{"op":"delete","key":""}`, "\xff\x00"} {
		res, _ := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte(data)}).(Result)
		if !errors.Is(res.Err, ErrBadCommand) {
			t.Errorf("Apply(%q).Err = %v, want ErrBadCommand", data, res.Err)
		}
	}
	wantValue(t, f, "k", "v", true)
	if f.Len() != 1 {
		t.Fatalf("Len = %d after refused commands, want 1", f.Len())
	}
}

func TestFSM_SnapshotIsPointInTime(t *testing.T) {
	f := NewFSM()
	apply(t, f, 1, Command{Op: OpSet, Key: "a", Value: "1"})
	apply(t, f, 2, Command{Op: OpSet, Key: "b", Value: "1"})
	apply(t, f, 3, Command{Op: OpRegister, Key: "n1", Value: "h1"})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after Snapshot must not show in the snapshot.
	apply(t, f, 4, Command{Op: OpSet, Key: "a", Value: "2"})
	apply(t, f, 5, Command{Op: OpDelete, Key: "b"})
	apply(t, f, 6, Command{Op: OpSet, Key: "c", Value: "3"})
	apply(t, f, 7, Command{Op: OpRegister, Key: "n1", Value: "h2"})
	data := persist(t, snap)
	snap.Release()

	r := restored(t, data)
	wantValue(t, r, "a", "1", true)
	wantValue(t, r, "b", "1", true)
	wantValue(t, r, "c", "", false)
	if addr, _ := r.MemberHTTP("n1"); addr != "h1" {
		t.Fatalf("restored member address %q, want h1", addr)
	}
	wantValue(t, f, "a", "2", true)
	wantValue(t, f, "b", "", false)
	wantValue(t, f, "c", "3", true)
}

func TestFSM_ReleaseStopsCopyOnWrite(t *testing.T) {
	f := NewFSM()
	apply(t, f, 1, Command{Op: OpSet, Key: "a", Value: "1"})
	s1, _ := f.Snapshot()
	s2, _ := f.Snapshot()
	if f.shared != 2 {
		t.Fatalf("shared = %d after two snapshots, want 2", f.shared)
	}
	s1.Release()
	s2.Release()
	if f.shared != 0 {
		t.Fatalf("shared = %d after both releases, want 0", f.shared)
	}
	gen := f.gen
	apply(t, f, 2, Command{Op: OpSet, Key: "a", Value: "2"})
	if f.gen != gen {
		t.Fatalf("a write with no snapshot outstanding cloned the maps")
	}
	s3, _ := f.Snapshot()
	apply(t, f, 3, Command{Op: OpSet, Key: "a", Value: "3"})
	if f.gen != gen+1 || f.shared != 0 {
		t.Fatalf("gen %d shared %d after a write under a snapshot; want %d, 0", f.gen, f.shared, gen+1)
	}
	s3.Release() // of an older generation: must not disturb the count
	if f.shared != 0 {
		t.Fatalf("shared = %d after releasing a stale snapshot", f.shared)
	}
}

func TestFSM_PersistRacesApply(t *testing.T) {
	f := NewFSM()
	for i := 0; i < 1000; i++ {
		apply(t, f, uint64(i+1), Command{Op: OpSet, Key: fmt.Sprint("k", i), Value: "old"})
	}
	snap, _ := f.Snapshot()
	var wg sync.WaitGroup
	var data []byte
	wg.Add(1)
	go func() {
		defer wg.Done()
		sink := &memSink{}
		if err := snap.Persist(sink); err == nil {
			data = sink.Bytes()
		}
	}()
	for i := 0; i < 1000; i++ {
		apply(t, f, uint64(2000+i), Command{Op: OpSet, Key: fmt.Sprint("k", i), Value: "new"})
		if _, err := f.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	r := restored(t, data)
	if r.Len() != 1000 {
		t.Fatalf("restored %d keys, want 1000", r.Len())
	}
	for i := 0; i < 1000; i++ {
		wantValue(t, r, fmt.Sprint("k", i), "old", true)
	}
}

func TestFSM_RestoreRefusesMalformedSnapshots(t *testing.T) {
	f := NewFSM()
	apply(t, f, 1, Command{Op: OpSet, Key: "a", Value: "1"})
	snap, _ := f.Snapshot()
	good := string(persist(t, snap))
	// A version 1 (JSON) snapshot as older raftkv wrote them.
	v1Header := `{"format":"raftkv-snapshot","version":1,"members":0,"keys":1}` + "\n"
	v1Entry := `{"k":"a","v":"1"}` + "\n"
	cases := map[string]string{
		"empty":             "",
		"not a snapshot":    "hello",
		"short magic":       snapshotMagic[:5],
		"no counts":         snapshotMagic,
		"missing entries":   snapshotMagic + "\x00\x05" + "\x01a\x011",
		"truncated entry":   good[:len(good)-1],
		"trailing data":     good + "x",
		"huge count":        snapshotMagic + "\x00\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
		"huge item":         snapshotMagic + "\x00\x01\xff\xff\xff\xff\x0f",
		"v1 foreign format": `{"format":"other","version":1,"members":0,"keys":0}`,
		"v1 newer version":  `{"format":"raftkv-snapshot","version":3,"members":0,"keys":0}`,
		"v1 negative count": `{"format":"raftkv-snapshot","version":1,"members":0,"keys":-1}`,
		"v1 missing entry":  `{"format":"raftkv-snapshot","version":1,"members":0,"keys":5}` + "\n" + v1Entry,
		"v1 trailing data":  v1Header + v1Entry + v1Entry,
		"v1 truncated":      v1Header + v1Entry[:6],
	}
	for name, data := range cases {
		target := NewFSM()
		apply(t, target, 1, Command{Op: OpSet, Key: "keep", Value: "me"})
		err := target.Restore(io.NopCloser(strings.NewReader(data)))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: Restore = %v, want ErrBadSnapshot", name, err)
		}
		wantValue(t, target, "keep", "me", true)
	}
	// The same version 1 snapshot, well formed, still restores.
	wantValue(t, restored(t, []byte(v1Header+v1Entry)), "a", "1", true)
}
