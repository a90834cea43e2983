package kv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
)

// Defaults for ServerConfig fields left zero.
const (
	DefaultRequestTimeout = 5 * time.Second
	DefaultMaxValueBytes  = 1 << 20
	DefaultMaxKeyBytes    = 1 << 10
)

// ServerConfig configures the HTTP API of one node.
type ServerConfig struct {
	// ID is this node's raft server ID.
	ID raft.ServerID
	// HTTPAddr is the host:port other nodes and redirected clients reach this node's API at.
	HTTPAddr string
	// RequestTimeout bounds every request, including the wait for a leader and forwarding.
	// Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxValueBytes is the largest value accepted; larger ones get 413. Default
	// DefaultMaxValueBytes. Keep it well below the transport's frame limit.
	MaxValueBytes int
	// MaxKeyBytes is the longest key accepted; longer ones get 400. Default
	// DefaultMaxKeyBytes.
	MaxKeyBytes int
	// Metrics, if set, serves GET /metrics (raftkv's main sets up go-metrics' Prometheus
	// sink and serves its text format).
	Metrics http.Handler
	// Token, if set, is the shared secret every admin and membership request must present
	// as "Authorization: Bearer <token>"; without it those endpoints are open.
	Token string
	// Snapshots is the node's snapshot store: GET /admin/snapshot serves the newest one when
	// nothing was applied since it. Nil turns backups off.
	Snapshots raft.SnapshotStore
	// ClientTLS, if set, is used to reach the other nodes' APIs (they serve HTTPS then).
	ClientTLS *tls.Config
	// JoinStatus, if set, reports the state of this node's own join for GET /status.
	JoinStatus func() *JoinState
	// Logger receives the server's logs; nil discards them.
	Logger hclog.Logger
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.MaxKeyBytes <= 0 {
		c.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// forwardedHeader marks a request a follower forwarded to the leader; its value is the
// follower's ID. A node that is no longer leader answers such a request with 503 instead of
// forwarding it again, so a request hops at most once.
const forwardedHeader = "X-Raftkv-Forwarded-By"

// Server is the HTTP API of one node. Its handlers are safe for concurrent use.
type Server struct {
	raft   *raft.Raft
	fsm    *FSM
	conf   ServerConfig
	logger hclog.Logger
	// client forwards requests to the leader. Its timeout is a backstop: each forwarded
	// request carries the caller's deadline.
	client *http.Client
}

// NewServer returns the API of the node r with state machine fsm.
func NewServer(r *raft.Raft, fsm *FSM, conf ServerConfig) *Server {
	conf = conf.withDefaults()
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: conf.RequestTimeout}).DialContext,
		TLSClientConfig:     conf.ClientTLS,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     time.Minute,
	}
	return &Server{
		raft:   r,
		fsm:    fsm,
		conf:   conf,
		logger: conf.Logger,
		client: &http.Client{
			Transport: transport,
			Timeout:   2 * conf.RequestTimeout,
			// A forwarded request is answered by the leader itself, never redirected.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Close releases the idle connections kept for forwarding.
func (s *Server) Close() { s.client.CloseIdleConnections() }

// Handler returns the routes of the API (see the README for the full list).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/set", methods(map[string]http.HandlerFunc{"GET": s.handleClassicSet}))
	mux.HandleFunc("/get", methods(map[string]http.HandlerFunc{"GET": s.handleClassicGet}))
	kvHandler := methods(map[string]http.HandlerFunc{"GET": s.handleGet, "PUT": s.handlePut, "DELETE": s.handleDelete})
	mux.HandleFunc("/kv/{key...}", kvHandler)
	mux.HandleFunc("/kv", kvHandler) // no key: 400, rather than the mux's redirect to /kv/
	mux.HandleFunc("/status", methods(map[string]http.HandlerFunc{"GET": s.handleStatus}))
	mux.HandleFunc("/join", s.admin(methods(map[string]http.HandlerFunc{"POST": s.handleJoin})))
	mux.HandleFunc("/leave", s.admin(methods(map[string]http.HandlerFunc{"POST": s.handleLeave})))
	mux.HandleFunc("/admin/snapshot", s.admin(methods(map[string]http.HandlerFunc{"GET": s.handleBackup})))
	mux.HandleFunc("/admin/restore", s.admin(methods(map[string]http.HandlerFunc{"POST": s.handleRestore})))
	mux.HandleFunc("/admin/transfer", s.admin(methods(map[string]http.HandlerFunc{"POST": s.handleTransfer})))
	mux.HandleFunc("/metrics", methods(map[string]http.HandlerFunc{"GET": s.handleMetrics}))
	view := newClusterView(s) // the live cluster view (ui.go)
	mux.HandleFunc("GET /{$}", ServeUIPage)
	mux.HandleFunc("GET /ui/cluster", view.handle)
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+req.URL.Path)
	})
	return s.limitURL(mux)
}

// limitURL answers 414 with a JSON error for a request line longer than a classic /set of
// the largest value, percent-encoded, can be. (Beyond the server's MaxHeaderBytes, Go's HTTP
// server itself answers a plain-text 431 before any handler runs.)
func (s *Server) limitURL(next http.Handler) http.Handler {
	limit := s.MaxURLBytes()
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if len(req.RequestURI) > limit {
			writeError(w, http.StatusRequestURITooLong, fmt.Sprintf("the URL is %d bytes, the limit is %d; send large values with PUT /kv/{key}", len(req.RequestURI), limit))
			return
		}
		next.ServeHTTP(w, req)
	})
}

// MaxURLBytes is the longest request URL the API accepts: room for a key and a value of the
// largest sizes, every byte percent-encoded.
func (s *Server) MaxURLBytes() int { return 3*(s.conf.MaxValueBytes+s.conf.MaxKeyBytes) + 1024 }

// writeResult is the JSON answer to a successful write.
type writeResult struct {
	Key     string `json:"key"`
	Index   uint64 `json:"index"`
	Existed bool   `json:"existed"`
}

// handleClassicSet serves GET /set?key=K&value=V and answers "ok", as the classic demo did.
func (s *Server) handleClassicSet(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	cmd := Command{Op: OpSet, Key: q.Get("key"), Value: q.Get("value")}
	if !s.checkKey(w, cmd.Key) {
		return
	}
	if !q.Has("value") {
		// The classic mistake: curl http://host/set?key=k&value=v unquoted, and the shell
		// ends the command at '&'. Storing "" would hide it.
		writeError(w, http.StatusBadRequest, "missing value (if the command line had an unquoted '&', the shell cut the URL there: quote it, as in curl 'http://host/set?key=k&value=v'; value= stores an empty value)")
		return
	}
	if !s.checkValueSize(w, len(cmd.Value)) {
		return
	}
	s.apply(w, req, nil, cmd, func(w http.ResponseWriter, _ writeResult) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
}

// handleClassicGet serves GET /get?key=K: the value and a newline, as /set's "ok" has one
// (a shell prompt then starts on its own line).
func (s *Server) handleClassicGet(w http.ResponseWriter, req *http.Request) {
	s.read(w, req, req.URL.Query().Get("key"), "\n")
}

// handleGet serves GET /kv/{key}: exactly the stored bytes.
func (s *Server) handleGet(w http.ResponseWriter, req *http.Request) {
	s.read(w, req, req.PathValue("key"), "")
}

// handlePut serves PUT /kv/{key} with the value as the body.
func (s *Server) handlePut(w http.ResponseWriter, req *http.Request) {
	key := req.PathValue("key")
	if !s.checkKey(w, key) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, int64(s.conf.MaxValueBytes)))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.checkValueSize(w, s.conf.MaxValueBytes+1)
			return
		}
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	s.apply(w, req, bytes.NewReader(body), Command{Op: OpSet, Key: key, Value: string(body)}, writeResultJSON)
}

// handleDelete serves DELETE /kv/{key}.
func (s *Server) handleDelete(w http.ResponseWriter, req *http.Request) {
	key := req.PathValue("key")
	if !s.checkKey(w, key) {
		return
	}
	s.apply(w, req, nil, Command{Op: OpDelete, Key: key}, writeResultJSON)
}

func writeResultJSON(w http.ResponseWriter, res writeResult) { writeJSON(w, http.StatusOK, res) }

// checkKey answers 400 and returns false for a missing or oversized key.
func (s *Server) checkKey(w http.ResponseWriter, key string) bool {
	switch {
	case key == "":
		writeError(w, http.StatusBadRequest, "missing key")
		return false
	case len(key) > s.conf.MaxKeyBytes:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("key is %d bytes, the limit is %d", len(key), s.conf.MaxKeyBytes))
		return false
	}
	return true
}

// checkValueSize answers 413 and returns false for a value above the limit.
func (s *Server) checkValueSize(w http.ResponseWriter, n int) bool {
	if n <= s.conf.MaxValueBytes {
		return true
	}
	writeError(w, http.StatusRequestEntityTooLarge, "value is larger than the limit of "+strconv.Itoa(s.conf.MaxValueBytes)+" bytes")
	return false
}

// apply replicates cmd through the leader and answers with ok on success.
func (s *Server) apply(w http.ResponseWriter, req *http.Request, body io.ReadSeeker, cmd Command, ok func(http.ResponseWriter, writeResult)) {
	s.onLeader(w, req, body, func(ctx context.Context) error {
		f := s.raft.ApplyContext(ctx, cmd.Encode())
		if err := f.Error(); err != nil {
			return err
		}
		res, _ := f.Response().(Result)
		if res.Err != nil {
			// The command was validated before it was proposed: a refusal here is a bug.
			return fmt.Errorf("kv: state machine refused the command: %w", res.Err)
		}
		ok(w, writeResult{Key: cmd.Key, Index: f.Index(), Existed: res.Existed})
		return nil
	})
}

// read answers a GET of key with its value and then suffix, on any node: linearizable by
// default (raft ReadIndexContext: on a follower it asks the leader for a read index and waits
// until its own copy applied it), from the leader's lease with ?consistency=lease, and at once
// from the local copy with ?consistency=stale.
func (s *Server) read(w http.ResponseWriter, req *http.Request, key, suffix string) {
	if !s.checkKey(w, key) {
		return
	}
	answer := func(w http.ResponseWriter) {
		v, found := s.fsm.Get(key)
		if !found {
			writeError(w, http.StatusNotFound, "key not found")
			return
		}
		ct := "text/plain; charset=utf-8"
		if !utf8.ValidString(v) {
			ct = "application/octet-stream"
		}
		w.Header().Set("Content-Type", ct)
		_, _ = io.WriteString(w, v+suffix)
	}
	switch c := req.URL.Query().Get("consistency"); c {
	case "stale":
		answer(w)
	case "", "linearizable", "lease":
		ctx, cancel := context.WithTimeout(req.Context(), s.conf.RequestTimeout)
		defer cancel()
		if err := s.readIndex(ctx, c == "lease"); err != nil {
			writeRaftError(w, err)
			return
		}
		answer(w)
	default:
		writeError(w, http.StatusBadRequest, "consistency must be linearizable, lease or stale, not "+strconv.Quote(c))
	}
}

// handleMetrics serves GET /metrics in the Prometheus text format.
func (s *Server) handleMetrics(w http.ResponseWriter, req *http.Request) {
	if s.conf.Metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled on this node")
		return
	}
	s.conf.Metrics.ServeHTTP(w, req)
}
