package kv

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/internal/testnet"
)

// threeNodes starts a bootstrapped 3-node cluster on loopback and waits until every node is
// registered. It returns the leader and the two followers.
func threeNodes(t *testing.T) (leader *Node, followers []*Node) {
	t.Helper()
	addrs := testnet.FreeLoopbackAddrs(t, 3)
	var cluster []raft.Server
	for i, a := range addrs {
		cluster = append(cluster, raft.Server{ID: raft.ServerID("n" + itoa(i+1)), Address: raft.ServerAddress(a)})
	}
	var nodes []*Node
	for i := range cluster {
		nodes = append(nodes, startTestNode(t, NodeConfig{ID: cluster[i].ID, RaftAddr: addrs[i], Cluster: cluster}))
	}
	waitRegistered(t, nodes...)
	for _, n := range nodes {
		if n.Raft().State() == raft.Leader {
			leader = n
		} else {
			followers = append(followers, n)
		}
	}
	if leader == nil || len(followers) != 2 {
		t.Fatalf("want one leader and two followers, got leader %v and %d followers", leader != nil, len(followers))
	}
	return leader, followers
}

func TestServer_FollowerForwardsWritesAndReads(t *testing.T) {
	leader, followers := threeNodes(t)
	f := followers[0]
	wantStatus(t, do(t, f, "PUT", "/kv/fwd", "via-follower"), http.StatusOK, "forwarded put")
	wantStatus(t, do(t, f, "GET", "/set?key=classic&value=1", ""), http.StatusOK, "forwarded classic set")
	// A linearizable or lease read on any node, served by that node, sees the write the
	// moment it was acknowledged.
	for _, n := range append(followers, leader) {
		for _, q := range []string{"", "?consistency=linearizable", "?consistency=lease"} {
			if r := do(t, n, "GET", "/kv/fwd"+q, ""); r.status != http.StatusOK || r.body != "via-follower" {
				t.Fatalf("read%s on %s: %d %q", q, n.conf.ID, r.status, r.body)
			}
		}
		if r := do(t, n, "GET", "/get?key=classic", ""); r.body != "1\n" {
			t.Fatalf("classic read on %s: %d %q", n.conf.ID, r.status, r.body)
		}
	}
	wantStatus(t, do(t, followers[1], "DELETE", "/kv/fwd", ""), http.StatusOK, "forwarded delete")
	wantStatus(t, do(t, f, "GET", "/kv/fwd", ""), http.StatusNotFound, "read after forwarded delete")
	// A stale read answers from the local copy, which catches up.
	waitFor(t, 5*time.Second, "the follower to apply the delete", func() bool {
		_, found := f.FSM().Get("fwd")
		return !found
	})
	wantStatus(t, do(t, f, "GET", "/kv/fwd?consistency=stale", ""), http.StatusNotFound, "stale read")
}

func TestServer_FollowerRedirectsWhenAsked(t *testing.T) {
	leader, followers := threeNodes(t)
	r := do(t, followers[0], "PUT", "/kv/r?redirect=1", "v")
	wantStatus(t, r, http.StatusTemporaryRedirect, "put with redirect=1")
	want := "http://" + leader.HTTPAddr() + "/kv/r?redirect=1"
	if loc := r.header.Get("Location"); loc != want {
		t.Fatalf("Location %q, want %q", loc, want)
	}
	if _, found := leader.FSM().Get("r"); found {
		t.Fatal("a redirected write was applied")
	}
	// The leader itself serves a redirected request.
	wantStatus(t, do(t, leader, "PUT", "/kv/r?redirect=1", "v"), http.StatusOK, "put on the leader")
}

func TestServer_ForwardedRequestIsNotForwardedAgain(t *testing.T) {
	_, followers := threeNodes(t)
	req, err := http.NewRequest("PUT", "http://"+followers[0].HTTPAddr()+"/kv/loop", strings.NewReader("v"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(forwardedHeader, "n9")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503 for a forwarded request reaching a follower", resp.StatusCode)
	}
}

// A follower forwarding POST /leave whose body names no server ({} or an empty id) must make
// the leader remove the follower, as it would for an empty body, not the leader itself.
func TestServer_ForwardedLeaveWithoutIDRemovesTheFollower(t *testing.T) {
	leader, followers := threeNodes(t)
	f := followers[0]
	wantStatus(t, do(t, f, "POST", "/leave", `{"id":""}`), http.StatusOK, "leave forwarded by a follower")
	wantFollowerLeft(t, leader, f)
}

// A redirect cannot carry the ID an empty /leave stands for, so following it would make the
// leader remove itself: the follower must remove itself through the leader instead.
func TestServer_LeaveWithoutIDAndRedirectRemovesTheFollower(t *testing.T) {
	leader, followers := threeNodes(t)
	f := followers[0]
	wantStatus(t, do(t, f, "POST", "/leave?redirect=1", ""), http.StatusOK, "empty leave with redirect=1 on a follower")
	wantFollowerLeft(t, leader, f)
}

// wantFollowerLeft checks that the leader's configuration loses f but still holds the leader.
// It waits for it: the removal committed on whichever node led when the leave arrived, and
// on a loaded machine that may no longer be leader, which then learns of it a moment later.
func wantFollowerLeft(t *testing.T, leader, f *Node) {
	t.Helper()
	var c raft.Configuration
	waitFor(t, 10*time.Second, string(f.conf.ID)+" to leave "+string(leader.conf.ID)+"'s configuration", func() bool {
		conf := leader.Raft().GetConfiguration()
		if conf.Error() != nil {
			return false
		}
		c = conf.Configuration()
		return !hasServer(c, f.conf.ID)
	})
	if !hasServer(c, leader.conf.ID) {
		t.Fatalf("configuration after %s left: %+v; want the leader %s kept", f.conf.ID, c.Servers, leader.conf.ID)
	}
}

func hasServer(c raft.Configuration, id raft.ServerID) bool {
	_, ok := findServer(c, id)
	return ok
}

// TestServer_FollowerRetriesWhenTheLeaderIsGone stops the leader and writes through a
// follower at once: the forward to the old leader is refused (nothing was applied), so the
// follower waits for the new leader and retries instead of answering 503.
func TestServer_FollowerRetriesWhenTheLeaderIsGone(t *testing.T) {
	leader, followers := threeNodes(t)
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		r := do(t, followers[i%2], "PUT", "/kv/failover-"+itoa(i), "v")
		wantStatus(t, r, http.StatusOK, "write through a follower after the leader stopped")
	}
	for i := 0; i < 5; i++ {
		if r := do(t, followers[0], "GET", "/kv/failover-"+itoa(i), ""); r.status != http.StatusOK || r.body != "v" {
			t.Fatalf("read %d: %d %q", i, r.status, r.body)
		}
	}
}

// TestNode_JoinThatCanNeverSucceedStops joins with an ID the cluster already has under
// another raft address: the node gives up at once, says why in /status, and reports it.
func TestNode_JoinThatCanNeverSucceedStops(t *testing.T) {
	member := singleNode(t, ServerConfig{})
	dup := startTestNode(t, NodeConfig{ID: "solo", Join: member.HTTPAddr()})
	select {
	case <-dup.JoinFailed():
	case <-time.After(10 * time.Second):
		t.Fatalf("the join was still retried after 10s: %+v", dup.JoinState())
	}
	if err := dup.JoinErr(); !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), "already a member") {
		t.Fatalf("JoinErr = %v, want ErrJoinRefused saying the ID is taken", err)
	}
	var st Status
	r := do(t, dup, "GET", "/status", "")
	if err := json.Unmarshal([]byte(r.body), &st); err != nil || st.Join == nil || st.Join.State != "failed" || !strings.Contains(st.Join.Error, "already a member") {
		t.Fatalf("status %s (%v), want join failed with the reason", r.body, err)
	}
	// The member's configuration is untouched.
	if n := len(member.Raft().GetConfiguration().Configuration().Servers); n != 1 {
		t.Fatalf("the member's configuration has %d servers, want 1", n)
	}
}

// TestNode_JoinWithoutTheTokenIsRefused: a cluster with a token refuses a join without it,
// for good; with it, the node joins.
func TestNode_JoinWithoutTheTokenIsRefused(t *testing.T) {
	member := singleNode(t, ServerConfig{Token: "t0k"})
	stranger := startTestNode(t, NodeConfig{ID: "stranger", Join: member.HTTPAddr()})
	select {
	case <-stranger.JoinFailed():
	case <-time.After(10 * time.Second):
		t.Fatal("a join without the token was still retried after 10s")
	}
	if err := stranger.JoinErr(); !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("JoinErr = %v, want a 401 refusal", err)
	}
	friend := startTestNode(t, NodeConfig{ID: "friend", Join: member.HTTPAddr(), Server: ServerConfig{Token: "t0k"}})
	waitRegistered(t, member, friend)
}
