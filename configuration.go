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

// msgpackHandle is the one codec configuration for everything raftkit encodes with msgpack.
// A codec.Handle is safe for concurrent use once configured, and nothing writes to it after
// package initialization.
var msgpackHandle = &codec.MsgpackHandle{WriteExt: true}

// EncodeConfiguration serializes a configuration for a LogConfiguration entry or a snapshot.
func EncodeConfiguration(c Configuration) []byte {
	var buf []byte
	enc := codec.NewEncoderBytes(&buf, msgpackHandle)
	if err := enc.Encode(c); err != nil {
		// Encoding a struct of strings and integers into memory cannot fail.
		panic(fmt.Sprintf("raft: encoding configuration: %v", err))
	}
	return buf
}

// DecodeConfiguration parses what EncodeConfiguration produced. Bytes from a peer or a disk
// may be anything: a decode failure or an invalid configuration returns an error wrapping
// ErrInvalidConfiguration.
func DecodeConfiguration(data []byte) (Configuration, error) {
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
