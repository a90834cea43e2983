package raft

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"
)

// snapshotStoreMaker makes a fresh store of one kind for a test.
type snapshotStoreMaker struct {
	name string
	make func(t *testing.T) SnapshotStore
}

// snapshotStores returns the makers of the stores that keep snapshots.
func snapshotStores() []snapshotStoreMaker {
	return []snapshotStoreMaker{{"file", func(t *testing.T) SnapshotStore {
		s, err := NewFileSnapshotStore(t.TempDir(), 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
		{"inmem", func(*testing.T) SnapshotStore { return NewInmemSnapshotStore() }},
	}
}

// forEachSnapshotStore runs test against every store that keeps snapshots.
func forEachSnapshotStore(t *testing.T, test func(t *testing.T, s SnapshotStore)) {
	for _, st := range snapshotStores() {
		t.Run(st.name, func(t *testing.T) { test(t, st.make(t)) })
	}
}

func testConfiguration() Configuration {
	return Configuration{Servers: []Server{
		{Suffrage: Voter, ID: "a", Address: "addr-a"},
		{Suffrage: Nonvoter, ID: "b", Address: "addr-b"},
	}}
}

// createSnapshot stores a snapshot holding data and returns its ID.
func createSnapshot(t *testing.T, s SnapshotStore, term, index uint64, data string) string {
	t.Helper()
	sink, err := s.Create(SnapshotVersion, index, term, testConfiguration(), index-1)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := io.WriteString(sink, data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return sink.ID()
}

// readSnapshot opens id and reads all of it.
func readSnapshot(s SnapshotStore, id string) (*SnapshotMeta, string, error) {
	meta, rc, err := s.Open(id)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	return meta, string(data), err
}

// listedIDs returns the IDs List returns, in its order.
func listedIDs(t *testing.T, s SnapshotStore) []string {
	t.Helper()
	metas, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	ids := []string{}
	for _, m := range metas {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestSnapshotStore_RoundTrip(t *testing.T) {
	forEachSnapshotStore(t, func(t *testing.T, s SnapshotStore) {
		conf := testConfiguration()
		sink, err := s.Create(SnapshotVersion, 10, 2, conf, 9)
		if err != nil {
			t.Fatal(err)
		}
		conf.Servers[0].ID = "changed" // the store must have copied it
		for _, part := range []string{"hello ", "", "world"} {
			if _, err := io.WriteString(sink, part); err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		want := SnapshotMeta{Version: SnapshotVersion, ID: sink.ID(), Index: 10, Term: 2,
			Configuration: testConfiguration(), ConfigurationIndex: 9, Size: 11}
		metas, err := s.List()
		if err != nil || len(metas) != 1 || !reflect.DeepEqual(*metas[0], want) {
			t.Fatalf("List = %v, %v; want [%+v]", metas, err, want)
		}
		metas[0].Configuration.Servers[0].ID = "scribbled" // nor may List share its copy
		meta, data, err := readSnapshot(s, sink.ID())
		if err != nil || data != "hello world" || !reflect.DeepEqual(*meta, want) {
			t.Fatalf("Open = %+v, %q, %v; want %+v, %q", meta, data, err, want, "hello world")
		}
	})
}

func TestSnapshotStore_ListsNewestFirst(t *testing.T) {
	forEachSnapshotStore(t, func(t *testing.T, s SnapshotStore) {
		// Created in this order; newest is by term, then index, then creation.
		sinks := make([]SnapshotSink, 3)
		for i, ti := range [][2]uint64{{2, 3}, {2, 3}, {1, 5}} {
			sink, err := s.Create(SnapshotVersion, ti[1], ti[0], testConfiguration(), 1)
			if err != nil {
				t.Fatal(err)
			}
			sinks[i] = sink
		}
		// Closed newest last, to show the order does not come from closing.
		for _, i := range []int{2, 0, 1} {
			if err := sinks[i].Close(); err != nil {
				t.Fatal(err)
			}
		}
		ids := listedIDs(t, s)
		want := []string{sinks[1].ID(), sinks[0].ID(), sinks[2].ID()}
		if len(ids) == 0 || !reflect.DeepEqual(ids, want[:len(ids)]) {
			t.Fatalf("List = %v, want a prefix of %v", ids, want)
		}
	})
}

func TestSnapshotStore_CancelLeavesNothing(t *testing.T) {
	forEachSnapshotStore(t, func(t *testing.T, s SnapshotStore) {
		kept := createSnapshot(t, s, 1, 1, "kept")
		sink, err := s.Create(SnapshotVersion, 2, 2, testConfiguration(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(sink, "abandoned"); err != nil {
			t.Fatal(err)
		}
		if err := sink.Cancel(); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		if ids := listedIDs(t, s); !reflect.DeepEqual(ids, []string{kept}) {
			t.Fatalf("List after Cancel = %v, want [%s]", ids, kept)
		}
		if _, _, err := s.Open(sink.ID()); !errors.Is(err, ErrSnapshotNotFound) {
			t.Fatalf("Open of a cancelled snapshot: %v, want ErrSnapshotNotFound", err)
		}
		checkSinkFinished(t, sink)
	})
}

// checkSinkFinished checks that a closed or cancelled sink refuses everything.
func checkSinkFinished(t *testing.T, sink SnapshotSink) {
	t.Helper()
	if _, err := sink.Write([]byte("late")); err == nil {
		t.Error("Write after Close or Cancel succeeded")
	}
	if err := sink.Close(); err == nil {
		t.Error("Close after Close or Cancel succeeded")
	}
	if err := sink.Cancel(); err == nil {
		t.Error("Cancel after Close or Cancel succeeded")
	}
}

func TestSnapshotStore_SinkRefusesUseAfterClose(t *testing.T) {
	discard := snapshotStoreMaker{"discard", func(*testing.T) SnapshotStore { return NewDiscardSnapshotStore() }}
	for _, st := range append(snapshotStores(), discard) {
		t.Run(st.name, func(t *testing.T) {
			sink, err := st.make(t).Create(SnapshotVersion, 1, 1, testConfiguration(), 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			checkSinkFinished(t, sink)
		})
	}
}

func TestSnapshotStore_RejectsBadInput(t *testing.T) {
	forEachSnapshotStore(t, func(t *testing.T, s SnapshotStore) {
		for _, v := range []int{0, SnapshotVersion + 1} {
			if _, err := s.Create(v, 1, 1, testConfiguration(), 1); err == nil {
				t.Errorf("Create with version %d succeeded", v)
			}
		}
		createSnapshot(t, s, 1, 1, "x")
		for _, id := range []string{"", "1-1", "../1-1-1", "1-1-1/..", "01-1-1", "2-2-2"} {
			if _, _, err := s.Open(id); !errors.Is(err, ErrSnapshotNotFound) {
				t.Errorf("Open(%q): %v, want ErrSnapshotNotFound", id, err)
			}
		}
	})
}

func TestDiscardSnapshotStore_KeepsNothing(t *testing.T) {
	s := NewDiscardSnapshotStore()
	ids := map[string]bool{}
	for i := range uint64(3) {
		sink, err := s.Create(SnapshotVersion, 7, 1, testConfiguration(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := fmt.Fprintf(sink, "data %d", i); err != nil || n != 6 {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if i == 0 {
			err = sink.Cancel()
		} else {
			err = sink.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		ids[sink.ID()] = true
		if _, _, err := s.Open(sink.ID()); !errors.Is(err, ErrSnapshotNotFound) {
			t.Fatalf("Open: %v, want ErrSnapshotNotFound", err)
		}
	}
	if len(ids) != 3 {
		t.Fatalf("sink IDs %v are not unique", ids)
	}
	if metas, err := s.List(); err != nil || len(metas) != 0 {
		t.Fatalf("List = %v, %v; want empty", metas, err)
	}
}

func TestInmemSnapshotStore_KeepsOnlyNewest(t *testing.T) {
	s := NewInmemSnapshotStore()
	old := createSnapshot(t, s, 1, 10, "old")
	meta, rc, err := s.Open(old)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	newest := createSnapshot(t, s, 2, 20, "new")
	if ids := listedIDs(t, s); !reflect.DeepEqual(ids, []string{newest}) {
		t.Fatalf("List = %v, want [%s]", ids, newest)
	}
	if _, _, err := s.Open(old); !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("Open of a replaced snapshot: %v, want ErrSnapshotNotFound", err)
	}
	// A reader opened before the replacement still reads its snapshot.
	if data, err := io.ReadAll(rc); err != nil || string(data) != "old" || meta.Index != 10 {
		t.Fatalf("earlier reader read %q, %v (meta %+v)", data, err, meta)
	}
	// A caller reusing its buffer after Write must not change the snapshot.
	sink, err := s.Create(SnapshotVersion, 30, 3, testConfiguration(), 1)
	if err != nil {
		t.Fatal(err)
	}
	buf := []byte("abc")
	sink.Write(buf)
	buf[0] = 'X'
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if _, data, err := readSnapshot(s, sink.ID()); err != nil || data != "abc" {
		t.Fatalf("snapshot reads %q, %v; want %q", data, err, "abc")
	}
}
