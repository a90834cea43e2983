package raft

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Issue 16, items 3 to 5, and the format version of issue 14.

// metaPath returns the meta.json path of snapshot id under dir.
func metaPath(dir, id string) string {
	return filepath.Join(dir, fileSnapshotSubdir, id, fileSnapshotMetaName)
}

// Item 3: the CRC used to cover only state.bin; one flipped bit in meta.json turned a peer's
// address 10.0.0.3 into 10.0.0.2 and was accepted. Every single-bit flip must be caught.
func TestFileSnapshotStore_EveryFlippedMetadataBitIsDetected(t *testing.T) {
	dir := t.TempDir()
	s := newFileSnapshotStore(t, dir, 3)
	defer s.Close()
	conf := Configuration{Servers: []Server{
		{Suffrage: Voter, ID: "a", Address: "10.0.0.1:7000"},
		{Suffrage: Voter, ID: "c", Address: "10.0.0.3:7000"},
	}}
	sink, err := s.Create(SnapshotVersion, 7, 2, conf, 5)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write([]byte("state"))
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	id := sink.ID()
	path := metaPath(dir, id)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(orig), "10.0.0.3") {
		t.Fatalf("meta.json does not hold the address: %s", orig)
	}
	for i := range orig {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte(nil), orig...)
			b[i] ^= 1 << bit
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Open(id); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("bit %d of byte %d (%q) flipped: Open = %v, want ErrSnapshotCorrupt", bit, i, orig[i], err)
			}
		}
	}
}

// Item 4: a second store on the same directory used to delete the first one's snapshot in
// progress as a crash leftover.
func TestFileSnapshotStore_SecondStoreOnTheDirectoryIsRefused(t *testing.T) {
	dir := t.TempDir()
	first := newFileSnapshotStore(t, dir, 2)
	sink, err := first.Create(SnapshotVersion, 3, 1, testConfiguration(), 1)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write([]byte("in progress"))
	if second, err := NewFileSnapshotStore(dir, 2, nil); !errors.Is(err, ErrSnapshotStoreLocked) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second store on the directory: %v, want ErrSnapshotStoreLocked", err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("the first store's snapshot in progress did not survive: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again := newFileSnapshotStore(t, dir, 2) // the lock went with Close
	defer again.Close()
	if got := listedIDs(t, again); len(got) != 1 || got[0] != sink.ID() {
		t.Fatalf("List after reopening = %v, want [%s]", got, sink.ID())
	}
	if _, err := first.Create(SnapshotVersion, 4, 1, testConfiguration(), 1); err == nil {
		t.Fatal("Create on a closed store succeeded")
	}
}

// Item 5: with retain 2 and snapshots 10, 20 (bad metadata) and 30, retention used to delete
// 10 and keep a single usable snapshot.
func TestFileSnapshotStore_RetentionCountsOnlyUsableSnapshots(t *testing.T) {
	dir := t.TempDir()
	s := newFileSnapshotStore(t, dir, 2)
	defer s.Close()
	ten := createSnapshot(t, s, 1, 10, "ten")
	twenty := createSnapshot(t, s, 1, 20, "twenty")
	if err := os.WriteFile(metaPath(dir, twenty), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	thirty := createSnapshot(t, s, 1, 30, "thirty")
	if got := listedIDs(t, s); !reflect.DeepEqual(got, []string{thirty, ten}) {
		t.Fatalf("List = %v, want [%s %s]: two usable snapshots", got, thirty, ten)
	}
	if got, err := s.DamagedSnapshotIndexes(); err != nil || !reflect.DeepEqual(got, []uint64{20}) {
		t.Fatalf("DamagedSnapshotIndexes = %v, %v; want [20]", got, err)
	}
	// The next snapshot ages out 10 and the damaged 20, which is older than both kept.
	forty := createSnapshot(t, s, 1, 40, "forty")
	if got := snapshotDirEntries(t, dir); !reflect.DeepEqual(got, []string{thirty, forty}) {
		t.Fatalf("directory holds %v, want [%s %s]", got, thirty, forty)
	}
}

// Issue 14: meta.json carries a format number. This build still reads format 1 (plain JSON,
// as earlier releases wrote it) and refuses a newer one clearly, without touching it.
func TestFileSnapshotStore_ReadsFormat1AndRefusesANewerFormat(t *testing.T) {
	dir := t.TempDir()
	s := newFileSnapshotStore(t, dir, 3)
	defer s.Close()
	id := createSnapshot(t, s, 1, 5, "five")
	m, err := s.readMeta(mustKey(t, id))
	if err != nil || m.Format != fileSnapshotFormat {
		t.Fatalf("readMeta of a new snapshot: %+v, %v; want format %d", m, err, fileSnapshotFormat)
	}
	m.Format = 0
	old, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(metaPath(dir, id), old, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, data, err := readSnapshot(s, id); err != nil || data != "five" {
		t.Fatalf("reading a format-1 snapshot: %q, %v", data, err)
	}
	current, err := encodeSnapshotMeta(*m)
	if err != nil {
		t.Fatal(err)
	}
	newer := forgeFormat(t, current, fileSnapshotFormat+1) // as a newer release would sign it
	if err := os.WriteFile(metaPath(dir, id), newer, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(); !errors.Is(err, ErrUnsupportedSnapshotFormat) {
		t.Fatalf("List with a newer-format snapshot: %v, want ErrUnsupportedSnapshotFormat", err)
	}
	if _, _, err := s.Open(id); !errors.Is(err, ErrUnsupportedSnapshotFormat) {
		t.Fatalf("Open of a newer-format snapshot: %v, want ErrUnsupportedSnapshotFormat", err)
	}
	if got, _ := os.ReadFile(metaPath(dir, id)); string(got) != string(newer) {
		t.Fatal("refusing a newer format changed its meta.json")
	}
}

// forgeFormat rewrites the format number of an encoded meta.json and signs it again.
func forgeFormat(t *testing.T, meta []byte, format int) []byte {
	t.Helper()
	body, _, ok := splitMetaChecksum(meta)
	if !ok {
		t.Fatal("meta.json without a checksum line")
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	m["Format"] = format
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return appendMetaChecksum(append(b, '\n'))
}

// mustKey parses a snapshot ID.
func mustKey(t *testing.T, id string) snapshotKey {
	t.Helper()
	k, ok := parseSnapshotID(id)
	if !ok {
		t.Fatalf("bad snapshot ID %q", id)
	}
	return k
}
