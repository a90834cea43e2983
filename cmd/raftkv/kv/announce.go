package kv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/raftkit/raft"
)

// How the announcer paces itself: quickly at first, since a fresh cluster needs every
// address before followers can forward, then backing off while it keeps failing (no
// leader yet, or a join refused).
const (
	announceFirstWait = 50 * time.Millisecond
	announceMaxWait   = 5 * time.Second
)

// ErrJoinRefused is what a node reports when its join can never succeed: the cluster has its
// ID under another raft address (or its address under another ID), or refused the request
// itself (a bad request, a missing or wrong token). Retrying would change nothing.
var ErrJoinRefused = errors.New("kv: join refused")

// How a node learns the HTTP address of the others: each node registers its own ID and HTTP
// address in the replicated state (OpRegister), so every node, restarted ones included,
// knows the address of whichever node leads. The leader applies its registration directly;
// any other node POSTs /join to the leader (or, before it knows one, to the Join address),
// which adds it first if it is not a member yet.

// announce registers this node's HTTP address, retrying until the replicated state holds it
// or the join is refused for good. A failure is logged at WARN when its reason changes, at
// DEBUG while it repeats.
func (n *Node) announce() {
	wait := announceFirstWait
	lastWhy := ""
	for !n.registered() {
		err := n.announceOnce()
		if errors.Is(err, ErrJoinRefused) {
			n.logger.Warn("join can never succeed; giving up", "error", err)
			n.setJoin(&JoinState{State: "failed", Error: err.Error()}, err)
			return
		}
		if err != nil {
			// No leader yet is the normal state of a starting cluster: only a failure with
			// a leader known (a refused or failing join) is worth a WARN, once per reason.
			why := err.Error()
			if why != lastWhy && !errors.Is(err, errNoLeader) {
				n.logger.Warn("registering the http address failed, will retry", "error", err)
			} else {
				n.logger.Debug("registering the http address failed, will retry", "error", err)
			}
			lastWhy = why
			n.setJoin(&JoinState{State: "joining", Error: err.Error()}, nil)
			// Waiting for an election: look again soon, so followers can forward as early
			// as possible. Other failures back off.
			if errors.Is(err, errNoLeader) {
				wait = announceFirstWait
			} else {
				wait = min(2*wait, announceMaxWait)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			return
		}
	}
	n.setJoin(&JoinState{State: "joined"}, nil)
	n.logger.Info("http address registered", "http_addr", n.httpAddr)
}

// setJoin publishes the join state; a non-nil err also ends the node's join for good.
func (n *Node) setJoin(st *JoinState, err error) {
	n.joinMu.Lock()
	defer n.joinMu.Unlock()
	n.join = st
	if err != nil {
		n.joinErr = err
		close(n.joinFailed)
	}
}

// JoinState returns the state of this node's join (registration, for a bootstrapped node).
func (n *Node) JoinState() *JoinState {
	n.joinMu.Lock()
	defer n.joinMu.Unlock()
	st := *n.join
	return &st
}

// JoinFailed is closed when the join can never succeed; JoinErr then says why. The node
// keeps running (GET /status shows the reason), but it is no member of any cluster: raftkv
// stops it with the error.
func (n *Node) JoinFailed() <-chan struct{} { return n.joinFailed }

// JoinErr returns why the join can never succeed, or nil.
func (n *Node) JoinErr() error {
	n.joinMu.Lock()
	defer n.joinMu.Unlock()
	return n.joinErr
}

// registered reports whether this node is a voter with its current HTTP address recorded.
func (n *Node) registered() bool {
	addr, ok := n.fsm.MemberHTTP(n.conf.ID)
	return ok && addr == n.httpAddr && isVoter(n.raft.GetConfiguration().Configuration(), n.conf.ID)
}

func isVoter(c raft.Configuration, id raft.ServerID) bool {
	srv, ok := findServer(c, id)
	return ok && srv.Suffrage == raft.Voter
}

// announceOnce makes one registration attempt.
func (n *Node) announceOnce() error {
	ctx, cancel := context.WithTimeout(n.ctx, n.server.conf.RequestTimeout)
	defer cancel()
	if n.raft.State() == raft.Leader {
		f := n.raft.ApplyContext(ctx, Command{Op: OpRegister, Key: string(n.conf.ID), Value: n.httpAddr}.Encode())
		return f.Error()
	}
	target, why := n.server.leaderHTTP()
	if target == "" {
		target = n.conf.Join
	}
	if target == "" {
		return fmt.Errorf("%w: %s", errNoLeader, why)
	}
	body, _ := json.Marshal(JoinRequest{ID: string(n.conf.ID), RaftAddr: string(n.raftAddr), HTTPAddr: n.httpAddr})
	return n.postJoin(ctx, n.server.baseURL(target)+"/join", body)
}

// postJoin sends a join request and turns anything but 200 into an error, wrapping
// ErrJoinRefused when no retry can succeed.
func (n *Node) postJoin(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := n.server.conf.Token; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := n.server.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Bounded: an error body is a short JSON object.
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var e errorBody
	if json.Unmarshal(msg, &e) == nil && e.Error != "" {
		msg = []byte(e.Error)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusUnauthorized,
		resp.StatusCode == http.StatusConflict && resp.Header.Get(joinConflictHeader) != "":
		return fmt.Errorf("%w by %s: %s: %s", ErrJoinRefused, url, resp.Status, bytes.TrimSpace(msg))
	}
	return fmt.Errorf("join via %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
}
