package raftest

import "github.com/raftkit/raft"

// DamagedSnapshotIndexes implements raft.DamagedSnapshotReporter by asking the wrapped store,
// so that start-up sees through the crash wrapper how far a damaged snapshot reached. A store
// that cannot tell reports nothing.
func (s *crashSnapshotStore) DamagedSnapshotIndexes() (idx []uint64, err error) {
	rep, ok := s.inner.(raft.DamagedSnapshotReporter)
	if !ok {
		return nil, nil
	}
	err = s.inc.read(func() error { idx, err = rep.DamagedSnapshotIndexes(); return err })
	return idx, err
}
