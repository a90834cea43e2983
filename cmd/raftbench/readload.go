package main

import (
	"fmt"
	"time"

	"github.com/raftkit/raft"
)

// readKinds are the values of -read:
//   - leader: ReadIndex on the leader (one confirmation round per batch of reads), then a
//     read of the leader's FSM;
//   - follower: ReadIndex on a follower (client i reads on the i-th follower, modulo their
//     number: one ReadIndex RPC to the leader per batch), then that follower's FSM;
//   - lease: ReadIndex on the leader with Config.LeaseReads: no round while the lease holds;
//   - log: a read as a command through the log (Apply of a small command), the way a store
//     without ReadIndex gets linearizable reads.
//
// Every kind bounds an operation by -timeout the same way (a deadline, as Apply takes), so
// that the comparison is between read paths, not between ways to time a call out: a
// context.WithTimeout per read costs the client a timer and four allocations that Apply
// does not pay.
var readKinds = []string{"leader", "follower", "lease", "log"}

// readCommand is what a read through the log applies: a few bytes naming a key.
var readCommand = []byte("get:key")

// readOps makes each client's read operation of kind cfg.read.
func (c *cluster) readOps(cfg config) func(client int) operation {
	return func(client int) operation {
		switch cfg.read {
		case "log":
			return func(leader *raft.Raft, _ uint64) (int, error) {
				return 0, leader.Apply(readCommand, cfg.timeout).Error()
			}
		case "follower":
			return func(leader *raft.Raft, _ uint64) (int, error) {
				return 0, c.read(cfg, c.follower(leader, client))
			}
		default: // leader and lease: the nodes' Config.LeaseReads tells them apart
			return func(leader *raft.Raft, _ uint64) (int, error) {
				return 0, c.read(cfg, c.nodeOf(leader))
			}
		}
	}
}

// read makes n's FSM current with ReadIndex and reads it.
func (c *cluster) read(cfg config, n *node) error {
	if n == nil {
		return fmt.Errorf("raftbench: no node to read on")
	}
	if err := n.raft.ReadIndex(cfg.timeout).Error(); err != nil {
		return err
	}
	_ = n.fsm.applied.Load() // the read itself
	return nil
}

// nodeOf returns the node running r.
func (c *cluster) nodeOf(r *raft.Raft) *node {
	for _, n := range c.nodes {
		if n.raft == r {
			return n
		}
	}
	return nil
}

// follower returns the client's follower: the (client mod followers)-th node that is not
// leader.
func (c *cluster) follower(leader *raft.Raft, client int) *node {
	var followers []*node
	for _, n := range c.nodes {
		if n.raft != leader {
			followers = append(followers, n)
		}
	}
	if len(followers) == 0 {
		return nil
	}
	return followers[client%len(followers)]
}

// waitLeaderKnown waits until every node knows the leader, so follower reads do not fail
// with raft.ErrNoLeader in the first heartbeat interval.
func (c *cluster) waitLeaderKnown(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range c.nodes {
		for {
			if _, id := n.raft.LeaderWithID(); id != "" {
				break
			}
			if time.Now().After(deadline) {
				return errNoLeader
			}
			<-time.After(time.Millisecond)
		}
	}
	return nil
}
