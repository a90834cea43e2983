package raft

import (
	"errors"
	"io"
)

// verifiedReader hands a stored snapshot to FSM.Restore and makes sure the store's integrity
// check runs. A store reports a checksum mismatch only at the Read that reaches the end of
// the data, and an FSM may stop reading once it decoded what it needs (a JSON or msgpack
// decoder does), so without this a corrupt snapshot could be restored without anyone
// noticing. Used by the FSM goroutine or, at start-up, by NewRaft; never concurrently.
type verifiedReader struct {
	rc     io.ReadCloser
	err    error // the first error other than io.EOF that a Read or the drain returned
	closed bool
}

// Read implements io.Reader.
func (v *verifiedReader) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	if err != nil && err != io.EOF && v.err == nil {
		v.err = err
	}
	return n, err
}

// Close reads what the FSM left unread, so the store checks the whole snapshot, then closes
// the store's reader. Calls after the first do nothing.
func (v *verifiedReader) Close() error {
	if v.closed {
		return nil
	}
	v.closed = true
	if v.err == nil {
		if _, err := io.Copy(io.Discard, v.rc); err != nil {
			v.err = err
		}
	}
	return v.rc.Close()
}

// restoreVerified restores fsm from a stored snapshot's reader and fails if the data turned
// out corrupt, even when the FSM did not read it to the end or ignored the error.
func restoreVerified(fsm FSM, rc io.ReadCloser) error {
	v := &verifiedReader{rc: rc}
	err := fsm.Restore(v)
	_ = v.Close() // FSM.Restore must close it; make sure, since the check happens here
	if err != nil {
		return err
	}
	return v.err
}

// sendingReader streams a stored snapshot to a follower and withholds its last bytes unless
// the store's integrity check passed: it reads one byte past the end (where the store reports
// a checksum mismatch) before handing over the final chunk. A corrupt snapshot then reaches
// the follower short, and the follower discards it instead of storing it under a fresh,
// valid checksum. Used by one replication goroutine.
type sendingReader struct {
	r         io.Reader
	remaining int64
	progress  *snapshotProgress // nil: not reported
}

// Read implements io.Reader.
func (s *sendingReader) Read(p []byte) (int, error) {
	if s.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.remaining {
		p = p[:s.remaining]
	}
	n, err := s.r.Read(p)
	s.remaining -= int64(n)
	s.progress.sent(int64(n))
	if err == io.EOF && s.remaining > 0 {
		return n, io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		return 0, err
	}
	if s.remaining == 0 {
		var probe [1]byte
		m, perr := s.r.Read(probe[:])
		if m > 0 {
			return 0, errSnapshotLongerThanSize
		}
		if perr != nil && perr != io.EOF {
			return 0, perr // the store's verdict on the data: withhold the last chunk
		}
	}
	return n, nil
}

var errSnapshotLongerThanSize = errors.New("raft: stored snapshot is longer than its recorded size")
