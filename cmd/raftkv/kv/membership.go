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

// JoinRequest is the body of POST /join. A new server is added as a voter (the core first
// lets it catch up as a nonvoter); a voter already in the configuration with the same raft
// address is only (re-)registered with its HTTP address.
type JoinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

// LeaveRequest is the body of POST /leave; an empty body (or ID) means the node receiving
// the request.
type LeaveRequest struct {
	ID string `json:"id"`
}

// joinConflictHeader marks a 409 answer to /join that no retry can change (the ID or the raft
// address is taken), unlike a concurrent configuration change.
const joinConflictHeader = "X-Raftkv-Join-Conflict"

// maxControlBodyBytes bounds the JSON bodies of /join and /leave: a few short strings.
const maxControlBodyBytes = 64 << 10

// readControlBody reads and decodes a small JSON body into v, answering 400 or 413 itself.
// An empty body leaves v as it is. It returns the raw body for forwarding.
func readControlBody(w http.ResponseWriter, req *http.Request, v any) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxControlBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		} else {
			writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		}
		return nil, false
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, v); err != nil {
			writeError(w, http.StatusBadRequest, "the body is not valid JSON: "+err.Error())
			return nil, false
		}
	}
	return body, true
}

// handleJoin serves POST /join.
func (s *Server) handleJoin(w http.ResponseWriter, req *http.Request) {
	var jr JoinRequest
	body, ok := readControlBody(w, req, &jr)
	if !ok {
		return
	}
	if jr.ID == "" || jr.RaftAddr == "" || jr.HTTPAddr == "" {
		writeError(w, http.StatusBadRequest, "join needs id, raft_addr and http_addr")
		return
	}
	s.onLeader(w, req, bytes.NewReader(body), func(ctx context.Context) error {
		return s.join(ctx, w, jr)
	})
}

// join runs on the leader: it adds the server if it is new, then registers its HTTP address.
func (s *Server) join(ctx context.Context, w http.ResponseWriter, jr JoinRequest) error {
	conf := s.raft.GetConfiguration()
	if err := conf.Error(); err != nil {
		return err
	}
	id, addr := raft.ServerID(jr.ID), raft.ServerAddress(jr.RaftAddr)
	voter := false
	for _, srv := range conf.Configuration().Servers {
		switch {
		case srv.ID == id && srv.Address == addr:
			voter = srv.Suffrage == raft.Voter
		case srv.ID == id:
			w.Header().Set(joinConflictHeader, "1")
			writeError(w, http.StatusConflict, fmt.Sprintf("server %s is already a member with raft address %s (remove it first with POST /leave, or use another ID)", id, srv.Address))
			return nil
		case srv.Address == addr:
			w.Header().Set(joinConflictHeader, "1")
			writeError(w, http.StatusConflict, fmt.Sprintf("raft address %s already belongs to server %s", addr, srv.ID))
			return nil
		}
	}
	if !voter {
		if err := s.raft.AddVoter(id, addr, conf.Index(), remaining(ctx)).Error(); err != nil {
			return err
		}
	}
	if cur, _ := s.fsm.MemberHTTP(id); cur != jr.HTTPAddr {
		f := s.raft.ApplyContext(ctx, Command{Op: OpRegister, Key: jr.ID, Value: jr.HTTPAddr}.Encode())
		if err := f.Error(); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": jr.ID, "added": !voter})
	return nil
}

// handleLeave serves POST /leave: the leader removes the server from the configuration.
func (s *Server) handleLeave(w http.ResponseWriter, req *http.Request) {
	var lr LeaveRequest
	if _, ok := readControlBody(w, req, &lr); !ok {
		return
	}
	if lr.ID == "" {
		lr.ID = string(s.conf.ID)
		// A redirect cannot carry this ID: the leader would read the same empty body as its
		// own ID and remove itself. Such a request is forwarded even with ?redirect=1.
		req = withoutRedirect(req)
	}
	// Forwarded, the request must still name this node, not the leader: the body is rebuilt
	// from lr, since the client's may leave the ID out ({} or "id": "").
	body, _ := json.Marshal(lr)
	s.onLeader(w, req, bytes.NewReader(body), func(ctx context.Context) error {
		conf := s.raft.GetConfiguration()
		if _, ok := findServer(conf.Configuration(), raft.ServerID(lr.ID)); !ok {
			writeError(w, http.StatusNotFound, "server "+lr.ID+" is not a member")
			return nil
		}
		if err := s.raft.RemoveServer(raft.ServerID(lr.ID), conf.Index(), remaining(ctx)).Error(); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": lr.ID, "removed": true})
		return nil
	})
}

// withoutRedirect returns req without its redirect query parameter.
func withoutRedirect(req *http.Request) *http.Request {
	q := req.URL.Query()
	if !q.Has("redirect") {
		return req
	}
	q.Del("redirect")
	out := req.Clone(req.Context())
	out.URL.RawQuery = q.Encode()
	return out
}

// remaining is what is left of ctx's deadline (at least a millisecond, so a zero never
// means "no timeout").
func remaining(ctx context.Context) time.Duration {
	deadline, ok := ctx.Deadline()
	if !ok {
		return DefaultRequestTimeout
	}
	return max(time.Until(deadline), time.Millisecond)
}

// Status is the JSON answer of GET /status.
type Status struct {
	ID            string         `json:"id"`
	Role          string         `json:"role"`
	Term          uint64         `json:"term"`
	Leader        StatusServer   `json:"leader"`
	CommitIndex   uint64         `json:"commit_index"`
	AppliedIndex  uint64         `json:"applied_index"`
	LastIndex     uint64         `json:"last_index"`
	HTTPAddr      string         `json:"http_addr"`
	Keys          int            `json:"keys"`
	Configuration []StatusServer `json:"configuration"`
	// Join is this node's own join or registration: "failed" with the reason when it can
	// never succeed.
	Join *JoinState `json:"join,omitempty"`
}

// StatusServer describes one server in a Status.
type StatusServer struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr,omitempty"`
	Suffrage string `json:"suffrage,omitempty"`
}

// handleStatus serves GET /status from this node's published state; it never waits on Raft.
func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	leaderAddr, leaderID := s.raft.LeaderWithID()
	st := Status{
		ID:           string(s.conf.ID),
		Role:         s.raft.State().String(),
		Term:         s.raft.CurrentTerm(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
		LastIndex:    s.raft.LastIndex(),
		HTTPAddr:     s.conf.HTTPAddr,
		Keys:         s.fsm.Len(),
	}
	if leaderID != "" {
		st.Leader = StatusServer{ID: string(leaderID), RaftAddr: string(leaderAddr)}
		st.Leader.HTTPAddr, _ = s.fsm.MemberHTTP(leaderID)
	}
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		httpAddr, _ := s.fsm.MemberHTTP(srv.ID)
		st.Configuration = append(st.Configuration, StatusServer{
			ID: string(srv.ID), RaftAddr: string(srv.Address), HTTPAddr: httpAddr, Suffrage: srv.Suffrage.String(),
		})
	}
	if s.conf.JoinStatus != nil {
		st.Join = s.conf.JoinStatus()
	}
	writeJSON(w, http.StatusOK, st)
}
