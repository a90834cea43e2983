package raftest

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"
)

// A test that hangs never reaches its cleanup, where the seed is printed: the go test timeout
// kills the binary first. The watchdog covers that case. Every running cluster registers its
// test's deadline (the -timeout) and seed; shortly before the deadline the watchdog prints the
// seed of every cluster still running, and the goroutines of synctest bubbles that are not
// durably blocked, which are what keeps virtual time from advancing in a hung bubble (a
// goroutine spinning, waiting for a mutex, or in a system call). The timeout's own dump follows,
// and may be cut short by whatever collects the output; these lines come first.
//
// The watchdog goroutine is started from init, outside any bubble, so its timer runs in real
// time even when every cluster lives in a bubble.

// watchdogMargin is how long before a test's deadline the watchdog reports.
const watchdogMargin = 5 * time.Second

// watchedCluster is a running cluster the watchdog knows of.
type watchedCluster struct {
	test     string
	seed     int64
	deadline time.Time // when to report
	reported bool
}

var watchdog = struct {
	mu       sync.Mutex
	clusters map[*watchedCluster]struct{}
	wake     chan struct{} // buffer 1: registering never blocks
	out      io.Writer     // where reports go; guarded by mu (tests swap it)
}{clusters: make(map[*watchedCluster]struct{}), wake: make(chan struct{}, 1), out: os.Stderr}

func init() { go runWatchdog() }

// started is when the test binary started, as near as raftest sees it (its init): the test
// deadline is the -test.timeout after it. Read outside any bubble, so it is real time.
var started = time.Now()

// testDeadline returns the test binary's deadline, or false without one (-timeout 0, or not
// a test binary). It cannot ask the test (T.Deadline panics inside a synctest bubble), so it
// adds the -test.timeout flag to the binary's start, which is no later than the deadline
// testing computes.
func testDeadline() (time.Time, bool) {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return time.Time{}, false
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return time.Time{}, false
	}
	d, ok := g.Get().(time.Duration)
	if !ok || d <= 0 {
		return time.Time{}, false
	}
	return started.Add(d), true
}

// watch registers a cluster of test until the returned function is called. Without a test
// deadline nothing is watched.
func watch(t interface{ Name() string }, seed int64) (unwatch func()) {
	deadline, ok := testDeadline()
	if !ok {
		return func() {}
	}
	return watchUntil(t.Name(), seed, deadline)
}

// watchUntil registers a cluster of the named test whose test binary ends at deadline.
func watchUntil(test string, seed int64, deadline time.Time) (unwatch func()) {
	w := &watchedCluster{test: test, seed: seed, deadline: deadline.Add(-watchdogMargin)}
	watchdog.mu.Lock()
	watchdog.clusters[w] = struct{}{}
	watchdog.mu.Unlock()
	select {
	case watchdog.wake <- struct{}{}:
	default:
	}
	return func() {
		watchdog.mu.Lock()
		delete(watchdog.clusters, w)
		watchdog.mu.Unlock()
	}
}

// runWatchdog reports clusters whose report time came, then sleeps until the next one or a
// new registration.
func runWatchdog() {
	for {
		next := reportDue(time.Now())
		if next.IsZero() {
			<-watchdog.wake
			continue
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-t.C:
		case <-watchdog.wake:
		}
		t.Stop()
	}
}

// reportDue prints the clusters due by now that were not reported yet, and returns the
// earliest report time still ahead (zero if none).
func reportDue(now time.Time) time.Time {
	watchdog.mu.Lock()
	var due []*watchedCluster
	var next time.Time
	for w := range watchdog.clusters {
		switch {
		case w.reported:
		case !now.Before(w.deadline):
			w.reported = true
			due = append(due, w)
		case next.IsZero() || w.deadline.Before(next):
			next = w.deadline
		}
	}
	out := watchdog.out
	watchdog.mu.Unlock()
	if len(due) == 0 {
		return next
	}
	var b bytes.Buffer
	for _, w := range due {
		fmt.Fprintf(&b, "raftest: %s is still running %v before its deadline: cluster seed %d (replay with RAFTEST_SEED=%d)\n",
			w.test, watchdogMargin, w.seed, w.seed)
	}
	if stuck := undurableBubbleGoroutines(); stuck != "" {
		b.WriteString("raftest: goroutines of synctest bubbles that are not durably blocked (they keep virtual time from advancing):\n")
		b.WriteString(stuck)
	}
	_, _ = out.Write(b.Bytes())
	return next
}

// undurableBubbleGoroutines returns the stacks of the goroutines inside a synctest bubble that
// are not durably blocked: running, runnable, waiting for a mutex, in a system call.
func undurableBubbleGoroutines() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= 64<<20 {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out bytes.Buffer
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		header, _, _ := bytes.Cut(g, []byte("\n"))
		if bytes.Contains(header, []byte("synctest bubble")) && !bytes.Contains(header, []byte("durable")) {
			out.Write(g)
			out.WriteString("\n\n")
		}
	}
	return out.String()
}
