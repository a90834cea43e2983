package raftest

import (
	"bytes"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the watchdog goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// swapWatchdogOut sends the watchdog's reports to w until the returned function is called.
func swapWatchdogOut(w *syncBuffer) func() {
	watchdog.mu.Lock()
	old := watchdog.out
	watchdog.out = w
	watchdog.mu.Unlock()
	return func() {
		watchdog.mu.Lock()
		watchdog.out = old
		watchdog.mu.Unlock()
	}
}

func TestWatchdog_PrintsTheSeedOfAClusterStillRunningAtItsDeadline(t *testing.T) {
	var out syncBuffer
	defer swapWatchdogOut(&out)()
	deadline := time.Now().Add(time.Hour)
	unwatch := watchUntil("TestHung", 4242, deadline)
	defer unwatch()

	if next := reportDue(deadline.Add(-time.Minute)); out.String() != "" || next.IsZero() {
		t.Fatalf("reported before the deadline (next report at %v): %q", next, out.String())
	}
	reportDue(deadline)
	got := out.String()
	if !strings.Contains(got, "TestHung") || !strings.Contains(got, "RAFTEST_SEED=4242") {
		t.Fatalf("report %q does not name the test and its seed", got)
	}
	reportDue(deadline.Add(time.Second))
	if out.String() != got {
		t.Fatalf("reported twice: %q", out.String())
	}
}

func TestWatchdog_KnowsTheTestDeadlineInsideABubble(t *testing.T) {
	want, ok := t.Deadline()
	synctest.Test(t, func(t *testing.T) {
		got, gotOK := testDeadline()
		if gotOK != ok || ok && (got.After(want) || want.Sub(got) > time.Minute) {
			t.Errorf("testDeadline() = %v, %v; the test's deadline is %v, %v", got, gotOK, want, ok)
		}
	})
}

func TestWatchdog_ForgetsAFinishedCluster(t *testing.T) {
	var out syncBuffer
	defer swapWatchdogOut(&out)()
	deadline := time.Now().Add(time.Hour)
	watchUntil("TestDone", 7, deadline)()
	reportDue(deadline)
	if strings.Contains(out.String(), "TestDone") {
		t.Fatalf("a finished cluster was reported: %q", out.String())
	}
}

// blockedOnMutex waits for mu: inside a bubble, not durably blocked.
func blockedOnMutex(mu *sync.Mutex, done chan<- struct{}) {
	mu.Lock()
	defer mu.Unlock()
	close(done)
}

func TestWatchdog_ShowsTheBubbleGoroutinesThatStopVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		idle := make(chan struct{})
		go idleUntil(idle)
		synctest.Wait() // idleUntil is durably blocked
		var mu sync.Mutex
		mu.Lock()
		done := make(chan struct{})
		go blockedOnMutex(&mu, done)
		var stuck string
		for i := 0; i < 1000 && !strings.Contains(stuck, "blockedOnMutex"); i++ {
			runtime.Gosched() // let it reach Lock
			stuck = undurableBubbleGoroutines()
		}
		// Errorf, not Fatalf: the goroutines must end for the bubble to end.
		if !strings.Contains(stuck, "blockedOnMutex") {
			t.Errorf("a goroutine waiting for a mutex was not shown:\n%s", stuck)
		}
		if strings.Contains(stuck, "idleUntil") {
			t.Errorf("a durably blocked goroutine was shown:\n%s", stuck)
		}
		mu.Unlock()
		<-done
		close(idle)
	})
}

// idleUntil waits for ch to close: durably blocked inside a bubble.
func idleUntil(ch <-chan struct{}) { <-ch }
