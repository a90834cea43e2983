package kv

import (
	"bytes"
	"context"
	"encoding/json"
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

// How a node learns the HTTP address of the others: each node registers its own ID and HTTP
// address in the replicated state (OpRegister), so every node, restarted ones included,
// knows the address of whichever node leads. The leader applies its registration directly;
// any other node POSTs /join to the leader (or, before it knows one, to the Join address),
// which adds it first if it is not a member yet.

// announce registers this node's HTTP address, retrying until the replicated state holds it.
func (n *Node) announce() {
	wait := announceFirstWait
	for !n.registered() {
		if err := n.announceOnce(); err != nil {
			n.logger.Debug("registering the http address failed, will retry", "error", err)
			wait = min(2*wait, announceMaxWait)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			return
		}
	}
	n.logger.Info("http address registered", "http_addr", n.httpAddr)
}

// registered reports whether this node is a voter with its current HTTP address recorded.
func (n *Node) registered() bool {
	addr, ok := n.fsm.MemberHTTP(n.conf.ID)
	return ok && addr == n.httpAddr && isVoter(n.raft.GetConfiguration().Configuration(), n.conf.ID)
}

func isVoter(c raft.Configuration, id raft.ServerID) bool {
	for _, srv := range c.Servers {
		if srv.ID == id {
			return srv.Suffrage == raft.Voter
		}
	}
	return false
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
	return postJoin(ctx, n.server.client, baseURL(target)+"/join", body)
}

// postJoin sends a join request and turns anything but 200 into an error.
func postJoin(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Bounded: an error body is a short JSON object.
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("join via %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
