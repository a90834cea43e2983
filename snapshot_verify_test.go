package raft

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// corruptAtEOF yields its data, then reports corruption where a checksumming store would: at
// the read that reaches the end.
type corruptAtEOF struct{ r io.Reader }

var errTestCorrupt = errors.New("test: checksum mismatch")

func (c *corruptAtEOF) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		return n, errTestCorrupt
	}
	return n, err
}

func TestSendingReader_WithholdsLastChunkOfCorruptSnapshot(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 100_000)
	got, err := io.ReadAll(&sendingReader{r: &corruptAtEOF{r: bytes.NewReader(data)}, remaining: int64(len(data))})
	if !errors.Is(err, errTestCorrupt) {
		t.Fatalf("error %v, want the store's corruption error", err)
	}
	if len(got) >= len(data) {
		t.Fatalf("all %d bytes were handed over despite the corruption", len(got))
	}
}

func TestSendingReader_PassesGoodSnapshot(t *testing.T) {
	data := bytes.Repeat([]byte("y"), 70_000)
	got, err := io.ReadAll(&sendingReader{r: bytes.NewReader(data), remaining: int64(len(data))})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, err %v; want all %d", len(got), err, len(data))
	}
}

func TestSendingReader_ShortAndLongSources(t *testing.T) {
	if _, err := io.ReadAll(&sendingReader{r: bytes.NewReader(make([]byte, 10)), remaining: 20}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short source: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := io.ReadAll(&sendingReader{r: bytes.NewReader(make([]byte, 30)), remaining: 20}); !errors.Is(err, errSnapshotLongerThanSize) {
		t.Fatalf("long source: %v, want errSnapshotLongerThanSize", err)
	}
}
