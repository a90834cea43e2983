package raftest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/raftkit/raft"
)

// KVFSM is a small key-value FSM for linearizability tests. Commands are made with
// KVPutCommand; reads go through Get on a node that confirmed a read with raft's ReadIndex.
type KVFSM struct {
	mu   sync.RWMutex
	data map[string]string // guarded by mu
}

// NewKVFSM returns an empty KVFSM.
func NewKVFSM() *KVFSM { return &KVFSM{data: make(map[string]string)} }

// KVPutCommand encodes "set key to value" for Apply.
func KVPutCommand(key, value string) []byte {
	b, _ := json.Marshal([2]string{key, value}) // two strings always encode
	return b
}

// Apply implements raft.FSM. Malformed commands are ignored and answered with an error value.
func (f *KVFSM) Apply(l *raft.Log) any {
	var kv [2]string
	if err := json.Unmarshal(l.Data, &kv); err != nil {
		return fmt.Errorf("raftest: bad kv command: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[kv[0]] = kv[1]
	return nil
}

// Get returns the value of key ("" if unset).
func (f *KVFSM) Get(key string) string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.data[key]
}

// Snapshot implements raft.FSM. The map is small in tests, so it is copied.
func (f *KVFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return kvSnapshot(maps.Clone(f.data)), nil
}

// Restore implements raft.FSM.
func (f *KVFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data := make(map[string]string)
	if err := json.NewDecoder(rc).Decode(&data); err != nil {
		return fmt.Errorf("raftest: decoding kv snapshot: %w", err)
	}
	f.mu.Lock()
	f.data = data
	f.mu.Unlock()
	return nil
}

type kvSnapshot map[string]string

func (s kvSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(map[string]string(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s kvSnapshot) Release() {}

// KVInput is one operation of a key-value history.
type KVInput struct {
	Put   bool
	Key   string
	Value string // for puts
}

// KVOutput is what a get returned.
type KVOutput struct {
	Value string
}

// KVModel is the sequential specification of a register per key, partitioned by key.
func KVModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := make(map[string][]porcupine.Operation)
			var keys []string
			for _, op := range history {
				k := op.Input.(KVInput).Key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() any { return "" },
		Step: func(state, input, output any) (bool, any) {
			in := input.(KVInput)
			if in.Put {
				return true, in.Value
			}
			return output.(KVOutput).Value == state.(string), state
		},
		DescribeOperation: func(input, output any) string {
			in := input.(KVInput)
			if in.Put {
				return fmt.Sprintf("put(%q, %q)", in.Key, in.Value)
			}
			return fmt.Sprintf("get(%q) -> %q", in.Key, output.(KVOutput).Value)
		},
	}
}

// History records the operations clients ran against a cluster, with their real-time order.
// It is safe for concurrent use. Timestamps come from a counter, not a clock, so operations
// that ran in zero virtual time inside a synctest bubble are still ordered exactly as they
// happened.
type History struct {
	clock atomic.Int64
	mu    sync.Mutex
	ops   []porcupine.Operation // guarded by mu
}

// Op is an operation in progress; finish it with Ok, Unknown or Failed.
type Op struct {
	h  *History
	op porcupine.Operation
}

// Begin records the invocation of an operation by client.
func (h *History) Begin(client int, in KVInput) *Op {
	return &Op{h: h, op: porcupine.Operation{ClientId: client, Input: in, Call: h.clock.Add(1)}}
}

// Ok records that the operation completed with out (ignored for puts).
func (o *Op) Ok(out KVOutput) {
	o.op.Output = out
	o.op.Return = o.h.clock.Add(1)
	o.h.add(o.op)
}

// Unknown records a put whose outcome is unknown (a timeout, a lost leadership): it may take
// effect at any point after its call, or never.
func (o *Op) Unknown() {
	o.op.Output = KVOutput{}
	o.op.Return = math.MaxInt64
	o.h.add(o.op)
}

// Failed drops an operation that certainly had no effect (a put that was not applied, a read
// that returned nothing).
func (o *Op) Failed() {}

func (h *History) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Len returns the number of recorded operations.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Check verifies the history is linearizable against KVModel within timeout. For an illegal
// history it returns an error naming an HTML file (in the temp directory) that shows the
// operations and where linearization fails. A search that timed out reports ok=false without
// error.
func (h *History) Check(timeout time.Duration) (ok bool, err error) {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(KVModel(), ops, timeout)
	switch res {
	case porcupine.Ok:
		return true, nil
	case porcupine.Unknown:
		return false, nil
	}
	where := "no visualization"
	if f, ferr := os.CreateTemp("", "raftest-linearizability-*.html"); ferr == nil {
		if porcupine.Visualize(KVModel(), info, f) == nil {
			where = "see " + f.Name()
		}
		_ = f.Close()
	}
	return false, fmt.Errorf("history of %d operations is not linearizable (%s)", len(ops), where)
}
