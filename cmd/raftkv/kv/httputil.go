package kv

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/raftkit/raft"
)

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
}

// writeJSON answers with v as JSON. Encoding our own response structs cannot fail, and a
// write error means the client went away: there is no one left to tell.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // messages quote URLs: keep '&' readable
	_ = enc.Encode(v)
}

// writeError answers with {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

// raftErrorStatus maps a failed Raft request to an HTTP status and a message that says
// whether the write may still have happened.
func raftErrorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, raft.ErrNoLeader):
		return http.StatusServiceUnavailable, "no leader confirmed the read: " + err.Error()
	case errors.Is(err, raft.ErrNotLeader):
		return http.StatusServiceUnavailable, "not the leader and could not reach it (not applied): " + err.Error()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return http.StatusServiceUnavailable, "no leader accepted the request within the request timeout (not applied)"
	case errors.Is(err, raft.ErrTimeout):
		return http.StatusServiceUnavailable, "no quorum confirmed the request within the request timeout (outcome unknown)"
	case errors.Is(err, raft.ErrLeadershipLost):
		return http.StatusServiceUnavailable, "leadership lost before the request completed (outcome unknown)"
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return http.StatusServiceUnavailable, "leadership transfer in progress (not applied); retry"
	case errors.Is(err, raft.ErrRaftShutdown):
		return http.StatusServiceUnavailable, "node is shutting down (outcome unknown)"
	case errors.Is(err, raft.ErrConfigurationChanged):
		return http.StatusConflict, "the configuration changed concurrently; retry"
	case errors.Is(err, raft.ErrInvalidConfiguration):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, errNoLeader):
		return http.StatusServiceUnavailable, err.Error()
	default:
		return http.StatusInternalServerError, err.Error()
	}
}

// writeRaftError answers a failed Raft request.
func writeRaftError(w http.ResponseWriter, err error) {
	status, msg := raftErrorStatus(err)
	writeError(w, status, msg)
}

// methods dispatches on the request method and answers 405 with a JSON error otherwise.
func methods(handlers map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		h, ok := handlers[req.Method]
		if !ok {
			writeError(w, http.StatusMethodNotAllowed, "method "+req.Method+" not allowed on "+req.URL.Path)
			return
		}
		h(w, req)
	}
}
