package raft

import "sync"

// fsmQueue carries tasks from the main loop to the FSM goroutine, in log order. push never
// blocks: the main loop answers heartbeats and votes however slow the user's FSM is. The
// queue is bounded by the main loop instead: it hands committed entries over only while
// fewer than limit are queued (see applyCommitted), holding the rest back as a commit index
// it has not handed over yet, and the leader takes no new commands while it holds any back,
// so a slow FSM reaches clients as slower Apply calls (or ErrEnqueueTimeout), never as a
// missed heartbeat and an election.
type fsmQueue struct {
	limit      int // committed entries the queue may hold before the main loop holds back
	limitBytes int // likewise in entryBytes

	mu      sync.Mutex
	tasks   []fsmTask // guarded by mu
	entries int       // guarded by mu: committed entries in tasks, the running one included
	bytes   int       // guarded by mu: their entryBytes
	held    bool      // guarded by mu: the main loop held entries back and waits for room

	// notify wakes the FSM goroutine (buffer 1, coalescing: one wake-up covers every task
	// queued so far). room tells the main loop it may hand over again (buffer 1, coalescing).
	notify chan struct{}
	room   chan struct{}
}

func newFSMQueue(limit, limitBytes int) *fsmQueue {
	return &fsmQueue{limit: limit, limitBytes: limitBytes, notify: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// taskBytes is the entryBytes of a task's entries.
func taskBytes(t fsmTask) int {
	n := 0
	for _, c := range t.commits {
		n += entryBytes(c.log)
	}
	return n
}

// push queues a task; it never blocks. Main loop only.
func (q *fsmQueue) push(t fsmTask) {
	q.mu.Lock()
	q.tasks = append(q.tasks, t)
	q.entries += len(t.commits)
	q.bytes += taskBytes(t)
	q.mu.Unlock()
	poke(q.notify)
}

// full reports whether the main loop must hold committed entries back; it then waits for a
// signal on room. Main loop only.
func (q *fsmQueue) full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.entries < q.limit && q.bytes < q.limitBytes {
		return false
	}
	q.held = true
	return true
}

// next takes the oldest task. FSM goroutine only; it calls done with the task afterwards.
func (q *fsmQueue) next() (fsmTask, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.tasks) == 0 {
		return fsmTask{}, false
	}
	t := q.tasks[0]
	q.tasks[0] = fsmTask{} // drop the references for the collector
	q.tasks = q.tasks[1:]
	if len(q.tasks) > 0 {
		poke(q.notify) // more to do: come back after serving other requests
	}
	return t, true
}

// done marks a task taken with next as finished, and tells a waiting main loop once half
// the room is free again (not at the first free slot: hand-offs then come in batches).
func (q *fsmQueue) done(t fsmTask) {
	q.mu.Lock()
	q.entries -= len(t.commits)
	q.bytes -= taskBytes(t)
	wake := q.held && q.entries <= q.limit/2 && q.bytes <= q.limitBytes/2
	if wake {
		q.held = false
	}
	q.mu.Unlock()
	if wake {
		poke(q.room)
	}
}

// len is the number of queued tasks, for Stats.
func (q *fsmQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.tasks)
}

// poke signals a coalescing channel of buffer 1 without blocking.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
