package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(dir); err != nil {
		t.Fatalf("SyncDir(%s): %v", dir, err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("SyncDir of a missing directory succeeded")
	}
}

func TestMkdirAll_SyncsTheParentOfEveryCreatedDirectory(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b", "c")
	var synced []string
	record := func(d string) error { synced = append(synced, d); return SyncDir(d) }
	if err := mkdirAll(dir, 0o755, record); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("%s not created: %v", dir, err)
	}
	want := []string{root, filepath.Join(root, "a"), filepath.Join(root, "a", "b")}
	if len(synced) != len(want) {
		t.Fatalf("synced %v, want %v", synced, want)
	}
	for i := range want {
		if synced[i] != want[i] {
			t.Fatalf("synced %v, want %v", synced, want)
		}
	}
	synced = nil
	if err := mkdirAll(dir, 0o755, record); err != nil || len(synced) != 0 {
		t.Fatalf("existing directory: err %v, synced %v; want nothing synced", err, synced)
	}
	if err := MkdirAll(filepath.Join(root, "x", "y"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestLockFile_SecondLockFailsUntilTheFirstCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	a, err := LockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := LockFile(path); !errors.Is(err, ErrLocked) {
		if b != nil {
			b.Close()
		}
		t.Fatalf("second LockFile: %v, want ErrLocked", err)
	}
	a.Close()
	b, err := LockFile(path)
	if err != nil {
		t.Fatalf("LockFile after the holder closed: %v", err)
	}
	b.Close()
}
