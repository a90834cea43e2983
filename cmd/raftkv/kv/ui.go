package kv

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/raftkit/raft"
)

// The live cluster view: GET / serves one page (ui.html, embedded) that polls GET /ui/cluster
// and draws every node of the cluster. A node builds that view from its own raft and from
// the /status of every other member; in dev mode the console (cmd/raftkv) builds it from the
// three in-process nodes and adds controls.

//go:embed ui.html
var uiPage []byte

// ViewNode is one node as the cluster view shows it.
type ViewNode struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr,omitempty"`
	RaftAddr string `json:"raft_addr,omitempty"`
	// State is leader, follower or candidate; "down" when the node does not answer.
	State string `json:"state"`
	// Cut is set in dev mode while the node is cut off from the network.
	Cut          bool   `json:"cut,omitempty"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	// SnapshotIndex is the node's newest snapshot; zero when unknown.
	SnapshotIndex uint64 `json:"snapshot_index,omitempty"`
	// Leader is the ID of the leader this node follows, or empty.
	Leader string `json:"leader"`
	// Lag is how many entries a follower's log is behind the leader's (leader's last index
	// minus its own); nil on the leader and when no leader is up.
	Lag *uint64 `json:"lag,omitempty"`
	// Error says why a node is shown down.
	Error string `json:"error,omitempty"`
}

// ViewElection is one leader seen taking office.
type ViewElection struct {
	At     time.Time `json:"at"`
	Term   uint64    `json:"term"`
	Leader string    `json:"leader"`
}

// View is what GET /ui/cluster answers.
type View struct {
	Nodes     []ViewNode     `json:"nodes"`
	Elections []ViewElection `json:"elections"` // newest first
	// Controls is set by the dev console, whose page offers crash, restart, cut off and heal.
	Controls bool `json:"controls"`
	// ElectionTimeoutMillis is the nodes' election timeout, for the page's explanations.
	ElectionTimeoutMillis int64 `json:"election_timeout_ms,omitempty"`
}

// ServeUIPage answers GET / with the cluster view page.
func ServeUIPage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(uiPage)
}

// RaftViewNode describes the node r as the view shows it. It never blocks (raft's status
// getters read published values).
func RaftViewNode(id raft.ServerID, httpAddr string, r *raft.Raft) ViewNode {
	_, leader := r.LeaderWithID()
	snap, _ := strconv.ParseUint(r.Stats()["last_snapshot_index"], 10, 64)
	state := r.State()
	v := ViewNode{
		ID: string(id), HTTPAddr: httpAddr, State: state.String(), Term: r.CurrentTerm(),
		CommitIndex: r.CommitIndex(), AppliedIndex: r.AppliedIndex(), LastIndex: r.LastIndex(),
		SnapshotIndex: snap, Leader: string(leader),
	}
	if state == raft.Shutdown {
		v.State, v.Error = "down", "shut down"
	}
	return v
}

// FillLag sets each up follower's Lag against the up leader of the highest term.
func FillLag(nodes []ViewNode) {
	lead := -1
	for i, n := range nodes {
		if n.State == raft.Leader.String() && (lead < 0 || n.Term > nodes[lead].Term) {
			lead = i
		}
	}
	if lead < 0 {
		return
	}
	for i := range nodes {
		n := &nodes[i]
		if i == lead || n.State == "down" {
			continue
		}
		lag := uint64(0)
		if last := nodes[lead].LastIndex; last > n.LastIndex {
			lag = last - n.LastIndex
		}
		n.Lag = &lag
	}
}

// ElectionLog keeps the most recent leaders seen taking office, as raft observers report
// them. It needs no goroutine: the observer's filter, which raft calls when the leader
// changes, records the election (with its time) under a mutex held for an append, and
// delivers nothing.
type ElectionLog struct {
	mu       sync.Mutex
	recent   []ViewElection // newest last, at most electionLogSize
	lastTerm uint64
}

// electionLogSize is how many elections the view lists.
const electionLogSize = 12

// Watch records the leaders r sees from now on. Call it again for a restarted node's new
// raft; a term is recorded once, however many nodes report its leader.
func (l *ElectionLog) Watch(r *raft.Raft) {
	r.RegisterObserver(raft.NewObserver(make(chan raft.Observation), false, func(o *raft.Observation) bool {
		if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID != "" {
			l.record(lo.Term, string(lo.LeaderID))
		}
		return false
	}))
}

func (l *ElectionLog) record(term uint64, leader string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if term <= l.lastTerm {
		return
	}
	l.lastTerm = term
	l.recent = append(l.recent, ViewElection{At: time.Now(), Term: term, Leader: leader})
	if len(l.recent) > electionLogSize {
		l.recent = slices.Delete(l.recent, 0, len(l.recent)-electionLogSize)
	}
}

// Recent returns the recorded elections, newest first.
func (l *ElectionLog) Recent() []ViewElection {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ViewElection, 0, len(l.recent)) // never nil: the page expects a list
	for i := len(l.recent) - 1; i >= 0; i-- {
		out = append(out, l.recent[i])
	}
	return out
}

// clusterView serves GET /ui/cluster on a node: itself from its raft, every other member
// from its GET /status.
type clusterView struct {
	s         *Server
	elections ElectionLog
}

func newClusterView(s *Server) *clusterView {
	v := &clusterView{s: s}
	v.elections.Watch(s.raft)
	return v
}

// peerStatusTimeout bounds the fetch of one member's status: a down member must not stall
// the page, which polls several times a second.
const peerStatusTimeout = 800 * time.Millisecond

func (v *clusterView) handle(w http.ResponseWriter, req *http.Request) {
	s := v.s
	servers := s.raft.GetConfiguration().Configuration().Servers
	nodes := make([]ViewNode, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		httpAddr, _ := s.fsm.MemberHTTP(srv.ID)
		if srv.ID == s.conf.ID {
			nodes[i] = RaftViewNode(srv.ID, s.conf.HTTPAddr, s.raft)
			nodes[i].RaftAddr = string(srv.Address)
			continue
		}
		nodes[i] = ViewNode{ID: string(srv.ID), HTTPAddr: httpAddr, RaftAddr: string(srv.Address), State: "down"}
		if httpAddr == "" {
			nodes[i].Error = "HTTP address not registered yet"
			continue
		}
		wg.Add(1)
		go func() { // one per member, all joined below
			defer wg.Done()
			v.fetchPeer(req.Context(), &nodes[i])
		}()
	}
	wg.Wait()
	FillLag(nodes)
	writeJSON(w, http.StatusOK, View{Nodes: nodes, Elections: v.elections.Recent()})
}

// fetchPeer fills n from the member's GET /status.
func (v *clusterView) fetchPeer(ctx context.Context, n *ViewNode) {
	ctx, cancel := context.WithTimeout(ctx, peerStatusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.s.baseURL(n.HTTPAddr)+"/status", nil)
	if err != nil {
		n.Error = err.Error()
		return
	}
	resp, err := v.s.client.Do(req)
	if err != nil {
		n.Error = err.Error()
		return
	}
	defer resp.Body.Close()
	var st Status
	if resp.StatusCode != http.StatusOK {
		n.Error = fmt.Sprintf("status answered %s", resp.Status)
		return
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		n.Error = "decoding status: " + err.Error()
		return
	}
	n.State, n.Term, n.Leader = st.Role, st.Term, st.Leader.ID
	n.CommitIndex, n.AppliedIndex, n.LastIndex = st.CommitIndex, st.AppliedIndex, st.LastIndex
}
