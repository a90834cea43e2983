package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/raftkit/raft"
)

// errNoLeader reports that no leader (or none with a known HTTP address) showed up within the
// request timeout.
var errNoLeader = errors.New("no leader available")

// leaderPollInterval is how often a request waiting for a leader looks again. It polls only
// while no leader is known (during an election); a raft.Observer filtering LeaderObservation
// would also do, but a millisecond-scale poll is cheap next to an election and keeps the
// example short.
const leaderPollInterval = 2 * time.Millisecond

// onLeader runs op when this node is the leader. Otherwise, or if op finds it is no longer
// the leader, the request goes to the leader: forwarded (body is the already-read request
// body), or redirected with 307 when the client asked with ?redirect=1. op writes the success
// response itself; its error becomes a 503 (or 500) JSON error. The whole request, forwarding
// included, is bounded by the request timeout.
func (s *Server) onLeader(w http.ResponseWriter, req *http.Request, body []byte, op func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(req.Context(), s.conf.RequestTimeout)
	defer cancel()
	if s.raft.State() == raft.Leader {
		err := op(ctx)
		if err == nil {
			return
		}
		if !errors.Is(err, raft.ErrNotLeader) {
			writeRaftError(w, err)
			return
		}
	}
	if by := req.Header.Get(forwardedHeader); by != "" {
		writeError(w, http.StatusServiceUnavailable, "node "+by+" forwarded this request here, but this node is not the leader any more; retry")
		return
	}
	leaderURL, err := s.awaitLeaderURL(ctx)
	if err != nil {
		writeRaftError(w, err)
		return
	}
	if req.URL.Query().Get("redirect") == "1" {
		http.Redirect(w, req, leaderURL+req.URL.RequestURI(), http.StatusTemporaryRedirect)
		return
	}
	s.forward(ctx, w, req, body, leaderURL)
}

// awaitLeaderURL waits, within ctx, until a leader is known along with its registered HTTP
// address, and returns its base URL.
func (s *Server) awaitLeaderURL(ctx context.Context) (string, error) {
	var why string
	t := time.NewTicker(leaderPollInterval)
	defer t.Stop()
	for {
		addr, reason := s.leaderHTTP()
		if addr != "" {
			return baseURL(addr), nil
		}
		why = reason
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", fmt.Errorf("%w within the request timeout: %s", errNoLeader, why)
		}
	}
}

// leaderHTTP returns the leader's HTTP address, or why it is not known.
func (s *Server) leaderHTTP() (addr, whyNot string) {
	_, id := s.raft.LeaderWithID()
	switch {
	case s.raft.State() == raft.Leader:
		return s.conf.HTTPAddr, ""
	case id == "":
		return "", "no leader is known (election in progress or no quorum)"
	}
	if a, ok := s.fsm.MemberHTTP(id); ok {
		return a, ""
	}
	return "", "leader " + string(id) + " has not registered its HTTP address yet"
}

// baseURL turns host:port (or a URL) into a base URL without a trailing slash.
func baseURL(addr string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/")
}

// forward sends the request to the leader and copies the answer back.
func (s *Server) forward(ctx context.Context, w http.ResponseWriter, req *http.Request, body []byte, leaderURL string) {
	out, err := http.NewRequestWithContext(ctx, req.Method, leaderURL+req.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "building the forwarded request: "+err.Error())
		return
	}
	out.Header.Set(forwardedHeader, string(s.conf.ID))
	if ct := req.Header.Get("Content-Type"); ct != "" {
		out.Header.Set("Content-Type", ct)
	}
	resp, err := s.client.Do(out)
	if err != nil {
		msg := "forwarding to the leader at " + leaderURL + " failed"
		if req.Method != http.MethodGet || strings.HasPrefix(req.URL.Path, "/set") {
			msg += " (outcome unknown)"
		}
		writeError(w, http.StatusServiceUnavailable, msg+": "+err.Error())
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	// Streamed, never buffered whole; a copy error means one side went away mid-answer.
	_, _ = io.Copy(w, resp.Body)
}

// readIndex makes a following read of the local FSM linearizable (Ongaro's thesis, section
// 6.4) without writing to the log, on any node: the leader confirms its leadership with a
// quorum (or, with lease, from its lease), after an entry of its own term committed, and this
// node waits until its FSM applied the leader's commit index of that moment.
func (s *Server) readIndex(ctx context.Context, lease bool) error {
	return s.raft.ReadIndexContext(ctx, raft.WithLease(lease)).Error()
}
