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

// leaderPollInterval is how often a request waiting for a leader, or for the FSM to catch up,
// looks again. The core offers no notification for either, and a millisecond-scale poll is
// cheap next to an election or a commit round trip.
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
// 6.4): once this node, as leader, has committed an entry of its current term, its commit
// index covers every entry committed before the read began; VerifyLeader then confirms no
// newer leader exists, and waiting until that index is applied makes the FSM current.
func (s *Server) readIndex(ctx context.Context) error {
	if err := s.ensureTermCommitted(ctx); err != nil {
		return err
	}
	index := s.raft.CommitIndex()
	if err := waitFuture(ctx, s.raft.VerifyLeader()); err != nil {
		return err
	}
	return s.waitApplied(ctx, index)
}

// ensureTermCommitted makes sure an entry of the current term has committed on this leader.
// A new leader appends a no-op for that, but until it commits, CommitIndex can lag behind
// what the previous leader acknowledged; a barrier, once per term, settles it.
func (s *Server) ensureTermCommitted(ctx context.Context) error {
	term := s.raft.CurrentTerm()
	if s.readyTerm.Load() >= term {
		return nil
	}
	deadline, _ := ctx.Deadline()
	if err := waitFuture(ctx, s.raft.Barrier(time.Until(deadline))); err != nil {
		return err
	}
	// The barrier was appended in term or later: either way an entry of a term >= term
	// committed. Keep the maximum against concurrent readers.
	for {
		old := s.readyTerm.Load()
		if old >= term || s.readyTerm.CompareAndSwap(old, term) {
			return nil
		}
	}
}

// waitApplied waits, within ctx, until the node applied index.
func (s *Server) waitApplied(ctx context.Context, index uint64) error {
	if s.raft.AppliedIndex() >= index {
		return nil
	}
	t := time.NewTicker(leaderPollInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if s.raft.AppliedIndex() >= index {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: applying index %d: %v", raft.ErrTimeout, index, ctx.Err())
		}
	}
}

// waitFuture waits for f, but no longer than ctx allows. The goroutine it starts owns nothing
// and exits when f resolves, which the core guarantees: on success, when the leader steps
// down (it fails every pending request) or at shutdown.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1) // buffer 1: the goroutine never blocks once the caller gave up
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", raft.ErrTimeout, ctx.Err())
	}
}
