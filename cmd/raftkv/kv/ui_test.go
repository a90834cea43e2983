package kv

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestClusterView_NodeServesPageAndViewOfEveryMember(t *testing.T) {
	leader, followers := threeNodes(t)
	page := do(t, followers[0], "GET", "/", "")
	wantStatus(t, page, http.StatusOK, "GET /")
	if ct := page.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(page.body, "ui/cluster") {
		t.Fatalf("GET / answered %q, %d bytes, not the cluster view page", ct, len(page.body))
	}
	do(t, leader, "PUT", "/kv/a", "1")

	var view View
	waitFor(t, 10*time.Second, "a view of three nodes, one leader and caught-up followers", func() bool {
		r := do(t, followers[0], "GET", "/ui/cluster", "")
		if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &view) != nil || len(view.Nodes) != 3 {
			return false
		}
		// One leader (not necessarily the first one: under load leadership may move), and
		// followers of it that caught up.
		var leaderID string
		for _, n := range view.Nodes {
			if n.State == "leader" {
				if leaderID != "" {
					return false
				}
				leaderID = n.ID
			}
		}
		for _, n := range view.Nodes {
			if n.ID != leaderID && (n.State != "follower" || n.Lag == nil || *n.Lag != 0 || n.Leader != leaderID) {
				return false
			}
		}
		return leaderID != ""
	})
	if view.Controls {
		t.Error("a node's view offers the dev controls")
	}
	// Elections the node saw: each names a leader, and one in the view's term names the view's
	// leader. (On a loaded machine leadership may move at any time, so terms are compared with
	// the view, not with a later read.)
	viewLeader := view.Nodes[0]
	for _, n := range view.Nodes {
		if n.State == "leader" {
			viewLeader = n
		}
	}
	for _, e := range view.Elections {
		if e.Leader == "" || e.Term == viewLeader.Term && e.Leader != viewLeader.ID {
			t.Errorf("election %+v does not fit the view's leader %s in term %d", e, viewLeader.ID, viewLeader.Term)
		}
	}
	// A member that stops answering shows as down, with the reason, and the rest stays.
	if err := followers[1].Close(); err != nil {
		t.Fatal(err)
	}
	r := do(t, followers[0], "GET", "/ui/cluster", "")
	if err := json.Unmarshal([]byte(r.body), &view); err != nil {
		t.Fatal(err)
	}
	for _, n := range view.Nodes {
		if down := n.ID == string(followers[1].conf.ID); down != (n.State == "down") || down && n.Error == "" {
			t.Errorf("node %s shown %q (error %q) after node %s closed", n.ID, n.State, n.Error, followers[1].conf.ID)
		}
	}
}

func TestElectionLog_RecordsEachTermOnceNewestFirst(t *testing.T) {
	var l ElectionLog
	for _, e := range []struct {
		term   uint64
		leader string
	}{{2, "a"}, {2, "a"}, {3, "b"}, {1, "c"}} {
		l.record(e.term, e.leader)
	}
	got := l.Recent()
	if len(got) != 2 || got[0].Term != 3 || got[0].Leader != "b" || got[1].Term != 2 {
		t.Fatalf("Recent() = %+v, want term 3 (b) then term 2 (a)", got)
	}
	for i := uint64(4); i < 4+2*electionLogSize; i++ {
		l.record(i, "x")
	}
	if got := l.Recent(); len(got) != electionLogSize || got[0].Term != 3+2*electionLogSize {
		t.Fatalf("after many elections: %d kept, newest term %d", len(got), got[0].Term)
	}
}
