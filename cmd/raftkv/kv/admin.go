package kv

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/raftkit/raft"
)

// admin requires the shared token, when one is configured, before next runs: every admin and
// membership endpoint goes through it. The token travels as "Authorization: Bearer <token>";
// a follower forwards the header with the request, so the leader checks it again.
func (s *Server) admin(next http.HandlerFunc) http.HandlerFunc {
	if s.conf.Token == "" {
		return next
	}
	want := []byte(s.conf.Token)
	return func(w http.ResponseWriter, req *http.Request) {
		got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="raftkv"`)
			writeError(w, http.StatusUnauthorized, "this endpoint needs the cluster token: send Authorization: Bearer <token>")
			return
		}
		next(w, req)
	}
}

// Headers of a backup: where the snapshot sits in the log of the node that took it.
const (
	snapshotIndexHeader = "X-Raftkv-Snapshot-Index"
	snapshotTermHeader  = "X-Raftkv-Snapshot-Term"
)

// handleBackup serves GET /admin/snapshot: a snapshot of this node's state, taken now (or the
// newest stored one if nothing was applied since), streamed as the body. The bytes are the
// FSM's snapshot format; POST /admin/restore takes them back. Ask the leader for the most
// recent state: a follower's copy may lag.
func (s *Server) handleBackup(w http.ResponseWriter, _ *http.Request) {
	if s.conf.Snapshots == nil {
		writeError(w, http.StatusNotFound, "backups are not enabled on this node")
		return
	}
	meta, rc, err := s.openBackup()
	if err != nil {
		writeRaftError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(meta.Size, 10))
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="raftkv-%d-%d.snap"`, meta.Term, meta.Index))
	w.Header().Set(snapshotIndexHeader, strconv.FormatUint(meta.Index, 10))
	w.Header().Set(snapshotTermHeader, strconv.FormatUint(meta.Term, 10))
	// A copy error means the client went away or the stored snapshot failed its integrity
	// check at the end: the body then ends short of Content-Length, which the client sees.
	_, _ = io.Copy(w, rc)
}

// openBackup takes a snapshot, or opens the newest one when nothing is new since.
func (s *Server) openBackup() (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.raft.Snapshot().Open()
	if !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return meta, rc, err
	}
	metas, err := s.conf.Snapshots.List()
	if err != nil {
		return nil, nil, err
	}
	if len(metas) == 0 {
		return nil, nil, errors.New("nothing was applied yet: there is nothing to back up")
	}
	return s.conf.Snapshots.Open(metas[0].ID)
}

// maxRestoreBytes bounds a backup uploaded to POST /admin/restore.
const maxRestoreBytes = 4 << 30

// handleRestore serves POST /admin/restore: the body, a backup from GET /admin/snapshot,
// replaces the state of every node (raft.Restore on the leader). The body is spooled to a
// temporary file and checked before anything changes: a malformed backup is refused with
// 400, and the cluster keeps its state.
func (s *Server) handleRestore(w http.ResponseWriter, req *http.Request) {
	f, err := os.CreateTemp("", "raftkv-restore-")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "spooling the backup: "+err.Error())
		return
	}
	defer func() { _ = f.Close(); _ = os.Remove(f.Name()) }()
	size, err := io.Copy(f, http.MaxBytesReader(w, req.Body, maxRestoreBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the backup: "+err.Error())
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if _, _, err := readSnapshot(f); err != nil {
		writeError(w, http.StatusBadRequest, "not a raftkv backup: "+err.Error())
		return
	}
	s.onLeader(w, req, f, func(ctx context.Context) error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		meta := &raft.SnapshotMeta{Version: raft.SnapshotVersion, Size: size}
		if err := s.raft.Restore(meta, f, remaining(ctx)); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"restored_bytes": size, "index": s.raft.AppliedIndex()})
		return nil
	})
}

// handleTransfer serves POST /admin/transfer[?to=ID]: the leader hands leadership to the
// named voter, or to the most up-to-date one.
func (s *Server) handleTransfer(w http.ResponseWriter, req *http.Request) {
	to := raft.ServerID(req.URL.Query().Get("to"))
	s.onLeader(w, req, nil, func(ctx context.Context) error {
		var f raft.Future
		if to == "" {
			f = s.raft.LeadershipTransfer()
		} else {
			srv, ok := findServer(s.raft.GetConfiguration().Configuration(), to)
			switch {
			case !ok:
				writeError(w, http.StatusNotFound, "server "+string(to)+" is not a member")
				return nil
			case srv.ID == s.conf.ID:
				writeError(w, http.StatusBadRequest, "server "+string(to)+" already leads")
				return nil
			}
			f = s.raft.LeadershipTransferToServer(srv.ID, srv.Address)
		}
		if err := f.Error(); err != nil {
			if errors.Is(err, raft.ErrLeadershipTransferFailed) {
				writeError(w, http.StatusServiceUnavailable, "leadership transfer failed; this node still leads: "+err.Error())
				return nil
			}
			return err
		}
		_, id := s.raft.LeaderWithID()
		writeJSON(w, http.StatusOK, map[string]any{"from": string(s.conf.ID), "leader": string(id)})
		return nil
	})
}

func findServer(c raft.Configuration, id raft.ServerID) (raft.Server, bool) {
	for _, srv := range c.Servers {
		if srv.ID == id {
			return srv, true
		}
	}
	return raft.Server{}, false
}

// JoinState is the outcome so far of this node's own join (or registration), shown by GET
// /status.
type JoinState struct {
	// State is "joining", "joined" or "failed".
	State string `json:"state"`
	// Error is the last refusal, or the reason a join can never succeed.
	Error string `json:"error,omitempty"`
}
