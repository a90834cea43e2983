package raft

import "fmt"

// Offline cluster surgery: functions that write a node's stores while the node is not
// running. BootstrapCluster gives a new cluster its first configuration; RecoverCluster forces
// a new one after a permanent loss of quorum. A running node bootstraps through
// Raft.BootstrapCluster, which shares bootstrapStores.

// BootstrapCluster writes the initial configuration into the stores of a node that has never
// run. Call it on every initial node with the same configuration, or on one node with a
// configuration of itself alone and add the others with AddVoter. (Calling it on one node with
// a configuration listing others that start empty elects no leader unless those others set
// Config.EmptyStartVotes: see the catch-up fence in docs/design.md.) It returns
// ErrCantBootstrap if the stores already hold state.
//
// trans is not used: the parameter keeps the signature of hashicorp/raft's BootstrapCluster,
// so code moving from it compiles unchanged.
func BootstrapCluster(conf *Config, logs LogStore, stable StableStore, snaps SnapshotStore, trans Transport, configuration Configuration) error {
	if err := ValidateConfig(conf); err != nil {
		return err
	}
	_, err := bootstrapStores(logs, stable, snaps, configuration)
	return err
}

// bootstrapStores checks the stores are empty and writes term 1 and the configuration as
// entry 1.
func bootstrapStores(logs LogStore, stable StableStore, snaps SnapshotStore, configuration Configuration) (*Log, error) {
	if err := configuration.Validate(); err != nil {
		return nil, err
	}
	term, err := stable.GetUint64(keyCurrentTerm)
	if err != nil {
		return nil, fmt.Errorf("raft: reading current term: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("raft: reading last log index: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("raft: listing snapshots: %w", err)
	}
	if term != 0 || last != 0 || len(metas) != 0 {
		return nil, ErrCantBootstrap
	}
	// A node started empty before it was bootstrapped carries the catch-up fence: a
	// bootstrapped node is a member of a new cluster, with nothing to catch up on.
	if fence, err := stable.Get(keyCatchUpFence); err != nil {
		return nil, fmt.Errorf("raft: reading the catch-up fence: %w", err)
	} else if len(fence) != 0 {
		if err := stable.Set(keyCatchUpFence, nil); err != nil {
			return nil, fmt.Errorf("raft: clearing the catch-up fence: %w", err)
		}
	}
	if err := stable.SetUint64(keyCurrentTerm, 1); err != nil {
		return nil, fmt.Errorf("raft: persisting term: %w", err)
	}
	entry := &Log{Index: 1, Term: 1, Type: LogConfiguration, Data: encodeConfiguration(configuration)}
	if err := logs.StoreLogs([]*Log{entry}); err != nil {
		return nil, fmt.Errorf("raft: storing bootstrap configuration: %w", err)
	}
	return entry, nil
}

// RecoverCluster forces a new configuration onto a node's stores after a permanent loss of
// quorum, when no leader can ever be elected again. Run it, with the node stopped, on one
// survivor (the one with the most up-to-date log: highest last term, then highest last
// index), with a configuration in which that server is the only voter; start it, and it
// leads alone. Then wipe the other survivors' stores and add them back with AddVoter: they
// catch up from the new leader. It appends the configuration as a new log entry, in a fresh
// term, after everything the node holds.
//
// Recovering a single node is deliberate: two survivors recovered independently could write
// the same index and term on top of different uncommitted entries, which would break the Log
// Matching property.
//
// It can lose data: entries that were committed on the lost servers but not on the recovered
// one are gone, and entries it holds uncommitted become committed. Use it only when the lost
// servers will never return.
//
// fsm and trans are not used: the node restores its FSM from the snapshot and replays the log
// when it starts. The parameters keep the signature of hashicorp/raft's RecoverCluster, so
// code moving from it compiles unchanged.
func RecoverCluster(conf *Config, fsm FSM, logs LogStore, stable StableStore, snaps SnapshotStore, trans Transport, configuration Configuration) error {
	if err := ValidateConfig(conf); err != nil {
		return err
	}
	if err := configuration.Validate(); err != nil {
		return err
	}
	if voters := configuration.voters(); len(voters) != 1 || voters[0] != conf.LocalID {
		return fmt.Errorf("%w: the recovering server %s must be the only voter of the new configuration; add the others back with AddVoter", ErrInvalidConfiguration, conf.LocalID)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft: recover: reading last index: %w", err)
	}
	var lastTerm uint64
	if last > 0 {
		var l Log
		if err := logs.GetLog(last, &l); err != nil {
			return fmt.Errorf("raft: recover: reading last entry: %w", err)
		}
		lastTerm = l.Term
	}
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("raft: recover: listing snapshots: %w", err)
	}
	if len(metas) > 0 && metas[0].Index > last {
		last, lastTerm = metas[0].Index, metas[0].Term
		// The log holds nothing after the snapshot; the new entry follows the snapshot.
		if first, _ := logs.FirstIndex(); first != 0 {
			if err := logs.DeleteRange(first, last); err != nil {
				return fmt.Errorf("raft: recover: clearing log behind snapshot: %w", err)
			}
		}
	}
	term, err := stable.GetUint64(keyCurrentTerm)
	if err != nil {
		return fmt.Errorf("raft: recover: reading term: %w", err)
	}
	// A fresh term for the entry: no server the recovered node will talk to holds a different
	// entry with this index and term, so the Log Matching property still holds.
	newTerm := max(term, lastTerm) + 1
	if err := stable.SetUint64(keyCurrentTerm, newTerm); err != nil {
		return fmt.Errorf("raft: recover: writing term: %w", err)
	}
	entry := &Log{Index: last + 1, Term: newTerm, Type: LogConfiguration, Data: encodeConfiguration(configuration)}
	if err := logs.StoreLogs([]*Log{entry}); err != nil {
		return fmt.Errorf("raft: recover: storing configuration: %w", err)
	}
	return nil
}
