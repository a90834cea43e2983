package raftest_test

import (
	"io"
	"sync"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/raftest"
)

// register is the FSM under test: a replicated register holding the last value written.
type register struct {
	mu    sync.Mutex
	value string
}

func (r *register) Apply(l *raft.Log) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.value = string(l.Data)
	return r.value
}

func (r *register) Snapshot() (raft.FSMSnapshot, error) { return registerSnapshot(r.get()), nil }

func (r *register) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.value = string(b)
	r.mu.Unlock()
	return nil
}

func (r *register) get() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.value
}

type registerSnapshot string

func (s registerSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := io.WriteString(sink, string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (registerSnapshot) Release() {}

// testRegisterSurvivesFaults is the test you write in your own package (as
// TestRegister_SurvivesFaults; this repository runs it as TestExample_RegisterSurvivesFaults).
// raftest.Run starts three nodes of your FSM over the in-memory network in virtual time, so
// elections cost no wall-clock time, and checks safety while the test crashes and cuts off
// nodes.
func testRegisterSurvivesFaults(t *testing.T) {
	opts := raftest.Options{Nodes: 3, NewFSM: func(raft.ServerID) raft.FSM { return &register{} }}
	raftest.Run(t, opts, func(t *testing.T, c *raftest.Cluster) {
		c.WaitLeader(5 * time.Second)
		if _, err := c.Apply([]byte("one"), 5*time.Second); err != nil {
			t.Fatal(err)
		}

		old := c.Leader()
		c.Crash(old)                  // the leader dies mid-flight
		c.WaitLeader(5 * time.Second) // the other two elect a new one
		follower := (c.Leader() + 1) % 3
		if follower == old {
			follower = (follower + 1) % 3
		}
		c.Isolate(follower) // and lose the last follower: no quorum is left
		if _, err := c.Apply([]byte("lost"), time.Second); err == nil {
			t.Fatal("a write succeeded without a quorum")
		}

		c.Heal()
		c.Start(old) // it comes back from its stores and catches up
		c.WaitLeader(5 * time.Second)
		f, err := c.Apply([]byte("two"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.WaitApplied(f.Index(), 5*time.Second)
		for _, n := range c.Nodes() {
			if got := n.FSM().(*register).get(); got != "two" {
				t.Fatalf("%s holds %q, want two", n.ID, got)
			}
		}
		c.CheckSafety() // one leader per term, log matching, the same entry applied at each index
	})
}

// Example_testYourFSM is this whole file: an FSM and the test a user writes for it with
// raftest. raftest runs inside a test (it needs the test's *testing.T), so go test compiles
// this example, and TestExample_RegisterSurvivesFaults runs testRegisterSurvivesFaults.
func Example_testYourFSM() {}
