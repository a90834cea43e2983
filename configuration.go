package raft

import (
	"bytes"
	"fmt"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// ServerSuffrage says whether a server's vote counts.
type ServerSuffrage uint8

const (
	// Voter servers vote in elections and count toward the commit quorum.
	Voter ServerSuffrage = iota
	// Nonvoter servers receive the log but neither vote nor count toward quorum.
	Nonvoter
)

func (s ServerSuffrage) String() string {
	switch s {
	case Voter:
		return "voter"
	case Nonvoter:
		return "nonvoter"
	default:
		return fmt.Sprintf("suffrage(%d)", uint8(s))
	}
}

// Server is one member of a cluster configuration.
type Server struct {
	Suffrage ServerSuffrage
	ID       ServerID
	Address  ServerAddress
}

// Configuration is the membership of a cluster. It is replicated as a LogConfiguration entry
// and takes effect on each server as soon as the entry is appended to its log.
type Configuration struct {
	Servers []Server
}

// Clone returns a deep copy.
func (c Configuration) Clone() Configuration {
	return Configuration{Servers: append([]Server(nil), c.Servers...)}
}

// Validate checks that every server has a non-empty, unique ID and address, the suffrage is
// known, and there is at least one voter. Errors wrap ErrInvalidConfiguration.
func (c Configuration) Validate() error {
	ids := make(map[ServerID]bool, len(c.Servers))
	addrs := make(map[ServerAddress]bool, len(c.Servers))
	voters := 0
	for _, s := range c.Servers {
		switch {
		case s.ID == "":
			return fmt.Errorf("%w: empty server ID", ErrInvalidConfiguration)
		case s.Address == "":
			return fmt.Errorf("%w: empty address for server %s", ErrInvalidConfiguration, s.ID)
		case ids[s.ID]:
			return fmt.Errorf("%w: duplicate server ID %s", ErrInvalidConfiguration, s.ID)
		case addrs[s.Address]:
			return fmt.Errorf("%w: duplicate address %s", ErrInvalidConfiguration, s.Address)
		case s.Suffrage != Voter && s.Suffrage != Nonvoter:
			return fmt.Errorf("%w: server %s has unknown suffrage %d", ErrInvalidConfiguration, s.ID, s.Suffrage)
		}
		ids[s.ID], addrs[s.Address] = true, true
		if s.Suffrage == Voter {
			voters++
		}
	}
	if voters == 0 {
		return fmt.Errorf("%w: no voter", ErrInvalidConfiguration)
	}
	return nil
}

// server returns the entry for id.
func (c Configuration) server(id ServerID) (Server, bool) {
	for _, s := range c.Servers {
		if s.ID == id {
			return s, true
		}
	}
	return Server{}, false
}

// isVoter reports whether id is a voter in c.
func (c Configuration) isVoter(id ServerID) bool {
	s, ok := c.server(id)
	return ok && s.Suffrage == Voter
}

// voters returns the IDs of the voters.
func (c Configuration) voters() []ServerID {
	var ids []ServerID
	for _, s := range c.Servers {
		if s.Suffrage == Voter {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// quorumSize is the number of voters that make a majority.
func (c Configuration) quorumSize() int {
	return len(c.voters())/2 + 1
}

// configurations is the pair every node tracks: the latest configuration in its log and the
// latest committed one. Owned by the main loop.
type configurations struct {
	committed      Configuration
	committedIndex uint64
	latest         Configuration
	latestIndex    uint64
}

func (c configurations) clone() configurations {
	return configurations{
		committed:      c.committed.Clone(),
		committedIndex: c.committedIndex,
		latest:         c.latest.Clone(),
		latestIndex:    c.latestIndex,
	}
}

// withLatest is c with conf, from the entry at index, as the latest configuration.
func (c configurations) withLatest(conf Configuration, index uint64) configurations {
	c.latest, c.latestIndex = conf, index
	return c
}

// withCommitted is c with conf, from the entry at index, as the committed configuration.
func (c configurations) withCommitted(conf Configuration, index uint64) configurations {
	c.committed, c.committedIndex = conf, index
	return c
}

// snapshotConfigurations is the pair right after a snapshot: its configuration is both the
// latest and the committed one.
func snapshotConfigurations(conf Configuration, index uint64) configurations {
	return configurations{committed: conf, committedIndex: index, latest: conf, latestIndex: index}
}

// setConfigurations is the one place the configurations change: the main loop's copy (or,
// before the loop starts, NewRaft's) and the published one GetConfiguration and Stats read
// without waiting on the main loop. It keeps a deep copy that is never modified afterwards,
// so both views, and the FSM batches that carry the committed configuration, share it.
func (r *Raft) setConfigurations(c configurations) {
	c = c.clone()
	r.configurations = c
	r.configs.Store(&c)
}

// decodeConfigurationEntry is the one decoder of LogConfiguration entries; errors name the
// entry and wrap ErrInvalidConfiguration.
func decodeConfigurationEntry(l *Log) (Configuration, error) {
	c, err := decodeConfiguration(l.Data)
	if err != nil {
		return Configuration{}, fmt.Errorf("configuration entry %d: %w", l.Index, err)
	}
	return c, nil
}

// newestConfigurationIn returns the newest configuration entry in the log range [lo, hi],
// reading back from hi; found is false when the range holds none.
func (r *Raft) newestConfigurationIn(lo, hi uint64) (c Configuration, index uint64, found bool, err error) {
	for i := hi; i >= lo && i > 0; i-- {
		var l Log
		if err := r.logs.GetLog(i, &l); err != nil {
			return Configuration{}, 0, false, fmt.Errorf("raft: reading log entry %d: %w", i, err)
		}
		if l.Type != LogConfiguration {
			continue
		}
		if c, err = decodeConfigurationEntry(&l); err != nil {
			return Configuration{}, 0, false, fmt.Errorf("raft: %w", err)
		}
		return c, i, true, nil
	}
	return Configuration{}, 0, false, nil
}

// msgpackHandle is the one codec configuration for everything raftkit encodes with msgpack.
// A codec.Handle is safe for concurrent use once configured, and nothing writes to it after
// package initialization.
var msgpackHandle = &codec.MsgpackHandle{WriteExt: true}

// encodeConfiguration serializes a configuration for a LogConfiguration entry or a snapshot.
func encodeConfiguration(c Configuration) []byte {
	var buf []byte
	enc := codec.NewEncoderBytes(&buf, msgpackHandle)
	if err := enc.Encode(c); err != nil {
		// Encoding a struct of strings and integers into memory cannot fail.
		panic(fmt.Sprintf("raft: encoding configuration: %v", err))
	}
	return buf
}

// decodeConfiguration parses what encodeConfiguration produced. Bytes from a peer or a disk
// may be anything: a decode failure or an invalid configuration returns an error wrapping
// ErrInvalidConfiguration.
func decodeConfiguration(data []byte) (Configuration, error) {
	var c Configuration
	dec := codec.NewDecoder(bytes.NewReader(data), msgpackHandle)
	if err := dec.Decode(&c); err != nil {
		return Configuration{}, fmt.Errorf("%w: decoding: %v", ErrInvalidConfiguration, err)
	}
	if err := c.Validate(); err != nil {
		return Configuration{}, err
	}
	return c, nil
}

// configurationBefore returns the newest configuration whose entry lies below index: from
// the log entries after the committed configuration, or else the committed configuration,
// which is the newest at or below the commit index (applyCommitted keeps it so).
func (r *Raft) configurationBefore(index uint64) (Configuration, uint64, error) {
	first, err := r.logs.FirstIndex()
	if err != nil {
		return Configuration{}, 0, fmt.Errorf("raft: reading first index: %w", err)
	}
	snapIndex, _ := r.snapshotIndexTerm()
	lo := max(r.configurations.committedIndex+1, snapIndex+1, first)
	c, i, found, err := r.newestConfigurationIn(lo, index-1)
	if err != nil || found {
		return c, i, err
	}
	return r.configurations.committed, r.configurations.committedIndex, nil
}

// rescanConfigurations makes the newest configuration entry at or after from, if any, the
// latest configuration.
func (r *Raft) rescanConfigurations(from uint64) error {
	last, _ := r.lastLogIndexTerm()
	c, i, found, err := r.newestConfigurationIn(from, last)
	if err != nil {
		return err
	}
	next := r.configurations
	if found {
		next = next.withLatest(c, i)
	}
	r.setConfigurations(next)
	return nil
}
