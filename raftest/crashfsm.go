package raftest

import (
	"fmt"
	"io"

	"github.com/raftkit/raft"
)

// FSM wraps the node's FSM for this incarnation: it applies the FSM faults (SetFSMFaults),
// crashes inside Apply and Restore when armed (CrashAt), and once the incarnation crashed it
// passes nothing on: Apply answers ErrCrashed and Snapshot and Restore fail with it. A
// raft.BatchingFSM stays one.
func (inc *Incarnation) FSM(inner raft.FSM) raft.FSM {
	f := &crashFSM{inc: inc, inner: inner}
	if b, ok := inner.(raft.BatchingFSM); ok {
		return crashBatchFSM{crashFSM: f, batcher: b}
	}
	return f
}

type crashFSM struct {
	inc   *Incarnation
	inner raft.FSM
}

func (f *crashFSM) Apply(l *raft.Log) any {
	if err := f.inc.fsmCall(CrashInFSMApply, 1); err != nil {
		return err
	}
	return f.inner.Apply(l)
}

func (f *crashFSM) Snapshot() (raft.FSMSnapshot, error) {
	if f.inc.Crashed() {
		return nil, ErrCrashed
	}
	return f.inner.Snapshot()
}

func (f *crashFSM) Restore(rc io.ReadCloser) error {
	if err := f.inc.fsmCall(CrashInFSMRestore, 1); err != nil {
		_ = rc.Close()
		return fmt.Errorf("raftest: restore: %w", err)
	}
	return f.inner.Restore(&crashReadCloser{inc: f.inc, ReadCloser: rc})
}

type crashBatchFSM struct {
	*crashFSM
	batcher raft.BatchingFSM
}

func (f crashBatchFSM) ApplyBatch(logs []*raft.Log) []any {
	if err := f.inc.fsmCall(CrashInFSMApply, len(logs)); err != nil {
		out := make([]any, len(logs))
		for i := range out {
			out[i] = err
		}
		return out
	}
	return f.batcher.ApplyBatch(logs)
}
