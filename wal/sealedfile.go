package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// tempSuffix marks a file being written for an atomic replace. Open removes leftovers.
const tempSuffix = ".tmp"

// maxSealedFileBytes bounds the marker and stable files, so a corrupt or foreign file in the
// directory cannot make Open read an unbounded amount into memory.
const maxSealedFileBytes = 16 << 20

// writeSealedFile replaces dir/name with payload followed by its CRC32C, atomically and
// durably: write a temp file, fsync it, rename it over name, fsync the directory. A crash
// leaves either the old or the new content, never a mix. With noSync the fsyncs are skipped
// (the rename still makes the replace atomic for a process crash).
func writeSealedFile(dir, name string, payload []byte, noSync bool) error {
	tmp := filepath.Join(dir, name+tempSuffix)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	buf := binary.LittleEndian.AppendUint32(payload[:len(payload):len(payload)], crc32.Checksum(payload, castagnoli))
	_, err = f.Write(buf)
	if err == nil && !noSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp) // best effort: Open removes leftovers anyway
		return err
	}
	if noSync {
		return nil
	}
	return syncDir(dir)
}

// readSealedFile returns the payload of dir/name after checking its CRC32C, or (nil, false,
// nil) when the file does not exist.
func readSealedFile(dir, name string) ([]byte, bool, error) {
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxSealedFileBytes+1))
	if err != nil {
		return nil, false, err
	}
	if len(buf) > maxSealedFileBytes {
		return nil, false, fmt.Errorf("%w: %s: larger than %d bytes", ErrCorrupt, path, maxSealedFileBytes)
	}
	if len(buf) < 4 {
		return nil, false, fmt.Errorf("%w: %s at offset 0: file of %d bytes has no checksum", ErrCorrupt, path, len(buf))
	}
	payload := buf[:len(buf)-4]
	if got, want := binary.LittleEndian.Uint32(buf[len(buf)-4:]), crc32.Checksum(payload, castagnoli); got != want {
		return nil, false, fmt.Errorf("%w: %s at offset %d: crc %08x, computed %08x", ErrCorrupt, path, len(payload), got, want)
	}
	return payload, true, nil
}
