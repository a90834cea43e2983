package raft

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errSnapshotSinkClosed is returned by a sink used after Close or Cancel.
var errSnapshotSinkClosed = errors.New("raft: snapshot sink already closed or cancelled")

// snapshotKey is what the snapshot stores name a snapshot by, and the order of List: by term,
// then index, then seq, which orders snapshots of the same term and index by creation.
type snapshotKey struct {
	term, index, seq uint64
}

// id returns the snapshot ID, "<term>-<index>-<seq>" in decimal.
func (k snapshotKey) id() string {
	return fmt.Sprintf("%d-%d-%d", k.term, k.index, k.seq)
}

// compareSnapshotKeys orders newest first, for slices.SortFunc.
func compareSnapshotKeys(a, b snapshotKey) int {
	if c := cmp.Compare(b.term, a.term); c != 0 {
		return c
	}
	if c := cmp.Compare(b.index, a.index); c != 0 {
		return c
	}
	return cmp.Compare(b.seq, a.seq)
}

// parseSnapshotID parses an ID made by snapshotKey.id. Anything else, including a path or a
// non-canonical number, is not an ID.
func parseSnapshotID(id string) (snapshotKey, bool) {
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		return snapshotKey{}, false
	}
	var nums [3]uint64
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil || strconv.FormatUint(v, 10) != p {
			return snapshotKey{}, false
		}
		nums[i] = v
	}
	return snapshotKey{term: nums[0], index: nums[1], seq: nums[2]}, true
}

// meta returns the metadata of a new snapshot named by k, without its size.
func (k snapshotKey) meta(version int, configuration Configuration, configurationIndex uint64) SnapshotMeta {
	return SnapshotMeta{
		Version:            version,
		ID:                 k.id(),
		Index:              k.index,
		Term:               k.term,
		Configuration:      configuration.Clone(),
		ConfigurationIndex: configurationIndex,
	}
}

// checkSnapshotVersion accepts the snapshot versions this build can write and read.
func checkSnapshotVersion(version int) error {
	if version < 1 || version > SnapshotVersion {
		return fmt.Errorf("raft: unsupported snapshot version %d (this build handles 1 to %d)", version, SnapshotVersion)
	}
	return nil
}
