package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

// notAppliedHeader marks a 503 that a node answered without touching the log (a forwarded
// request reached a node that is no longer the leader): the forwarding node may send the
// request again, to the new leader, without risking a second apply.
const notAppliedHeader = "X-Raftkv-Not-Applied"

// Forwarding retries, after a forward that certainly reached no leader, wait this long at
// first and back off to forwardRetryMax: long enough not to spin on a dead leader's refused
// port, short next to an election.
const (
	forwardRetryFirst = 10 * time.Millisecond
	forwardRetryMax   = 200 * time.Millisecond
)

// onLeader runs op when this node is the leader. Otherwise, or if op finds it is no longer
// the leader, the request goes to the leader: forwarded (body is the already-read request
// body), or redirected with 307 when the client asked with ?redirect=1. op writes the success
// response itself; its error becomes a 503 (or 500) JSON error. The whole request, forwarding
// included, is bounded by the request timeout.
//
// A forward that certainly did not reach a leader (the connection was refused, or the node
// answered that it no longer leads) changed nothing, so it is retried, with the leader this
// node knows by then, until the request timeout: during a failover the client sees a slower
// answer instead of an error.
func (s *Server) onLeader(w http.ResponseWriter, req *http.Request, body io.ReadSeeker, op func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(req.Context(), s.conf.RequestTimeout)
	defer cancel()
	var lastErr error // why the previous forward failed; every such failure was "not applied"
	wait := forwardRetryFirst
	for {
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
			w.Header().Set(notAppliedHeader, "1")
			writeError(w, http.StatusServiceUnavailable, "node "+by+" forwarded this request here, but this node is not the leader any more (not applied); retry")
			return
		}
		leaderURL, err := s.awaitLeaderURL(ctx)
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (not applied); the last attempt: %v", errNoLeader, lastErr)
			}
			writeRaftError(w, err)
			return
		}
		if req.URL.Query().Get("redirect") == "1" {
			http.Redirect(w, req, leaderURL+req.URL.RequestURI(), http.StatusTemporaryRedirect)
			return
		}
		if lastErr = s.forward(ctx, w, req, body, leaderURL); lastErr == nil {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		wait = min(2*wait, forwardRetryMax)
	}
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
			return s.baseURL(addr), nil
		}
		why = reason
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", fmt.Errorf("%w within the request timeout (not applied): %s", errNoLeader, why)
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

// baseURL turns host:port (or a URL) into a base URL without a trailing slash: https when
// the nodes talk TLS.
func (s *Server) baseURL(addr string) string {
	if !strings.Contains(addr, "://") {
		scheme := "http://"
		if s.conf.ClientTLS != nil {
			scheme = "https://"
		}
		addr = scheme + addr
	}
	return strings.TrimRight(addr, "/")
}

// errRetryForward is what forward returns when the request certainly did not reach a
// leader; it wraps the cause.
var errRetryForward = errors.New("forward did not reach a leader")

// forward sends the request to the leader and copies the answer back. It writes nothing and
// returns an error wrapping errRetryForward when the request certainly changed nothing (the
// dial failed, or the target answered that it no longer leads): the caller may send it again.
// Every other outcome is written to w and forward returns nil.
func (s *Server) forward(ctx context.Context, w http.ResponseWriter, req *http.Request, body io.ReadSeeker, leaderURL string) error {
	if body == nil {
		body = bytes.NewReader(nil)
	}
	size, err1 := body.Seek(0, io.SeekEnd)
	_, err2 := body.Seek(0, io.SeekStart)
	if err := errors.Join(err1, err2); err != nil {
		writeError(w, http.StatusInternalServerError, "rewinding the request body: "+err.Error())
		return nil
	}
	out, err := http.NewRequestWithContext(ctx, req.Method, leaderURL+req.URL.RequestURI(), io.NopCloser(body))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "building the forwarded request: "+err.Error())
		return nil
	}
	out.ContentLength = size
	out.Header.Set(forwardedHeader, string(s.conf.ID))
	for _, h := range []string{"Content-Type", "Authorization"} {
		if v := req.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	resp, err := s.client.Do(out)
	if err != nil {
		if neverSent(err) && ctx.Err() == nil {
			return fmt.Errorf("%w: %s: %v", errRetryForward, leaderURL, err)
		}
		msg := "forwarding to the leader at " + leaderURL + " failed"
		if isWrite(req) {
			msg += " (outcome unknown)"
		}
		writeError(w, http.StatusServiceUnavailable, msg+": "+err.Error())
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(notAppliedHeader) != "" && ctx.Err() == nil {
		return fmt.Errorf("%w: %s is not the leader any more", errRetryForward, leaderURL)
	}
	for _, h := range []string{"Content-Type", notAppliedHeader, joinConflictHeader, "WWW-Authenticate"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	// Streamed, never buffered whole; a copy error means one side went away mid-answer.
	_, _ = io.Copy(w, resp.Body)
	return nil
}

// neverSent reports whether a client error certainly happened before any byte of the request
// left this node: the connection could not be made at all (refused, unreachable, DNS). Any
// later failure (a reset, a timeout waiting for the answer) leaves the outcome unknown.
func neverSent(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// isWrite reports whether the request changes state when it succeeds.
func isWrite(req *http.Request) bool {
	return req.Method != http.MethodGet || strings.HasPrefix(req.URL.Path, "/set")
}

// readIndex makes a following read of the local FSM linearizable (Ongaro's thesis, section
// 6.4) without writing to the log, on any node: the leader confirms its leadership with a
// quorum (or, with lease, from its lease), after an entry of its own term committed, and this
// node waits until its FSM applied the leader's commit index of that moment.
//
// A node that knows no leader (an election is under way, or it just started) fails such a
// read at once with raft.ErrNoLeader; the service retries it until a leader answers or the
// request timeout passes, so clients see a 503 only when no leader emerged in time.
func (s *Server) readIndex(ctx context.Context, lease bool) error {
	t := time.NewTicker(leaderPollInterval)
	defer t.Stop()
	for {
		err := s.raft.ReadIndexContext(ctx, raft.WithLease(lease)).Error()
		if !errors.Is(err, raft.ErrNoLeader) {
			return err
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("%w within the request timeout: %w", errNoLeader, err)
		}
	}
}
