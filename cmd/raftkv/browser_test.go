package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The browser test drives headless Chromium over the DevTools protocol on a pipe
// (--remote-debugging-pipe: JSON messages separated by NUL bytes on file descriptors 3 and
// 4), so it needs no driver library and no websocket: a hundred lines below.

var screenshotPath = flag.String("ui.screenshot", "", "write a PNG of the dev console to this path (TestRaftkv_BrowserClusterView)")

// chromiumPath finds Chromium; under CI=true a missing browser fails the test (.ci/run
// installs Debian's chromium package), elsewhere it skips it.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found; .ci/run installs it with apt-get install chromium")
	}
	t.Skip("chromium not installed (apt-get install chromium); CI runs this test")
	return ""
}

// cdp is a DevTools protocol client over Chromium's debugging pipe.
type cdp struct {
	cmd    *exec.Cmd
	toChr  *os.File
	stderr *syncBuffer

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan cdpReply
	done    chan struct{} // closed when the reader goroutine returned
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startChromium runs headless Chromium with a fresh profile and connects to it.
func startChromium(t *testing.T, path string) *cdp {
	t.Helper()
	chrIn, toChr, err := os.Pipe() // Chromium reads commands on fd 3
	if err != nil {
		t.Fatal(err)
	}
	fromChr, chrOut, err := os.Pipe() // and writes replies and events on fd 4
	if err != nil {
		t.Fatal(err)
	}
	c := &cdp{toChr: toChr, stderr: &syncBuffer{}, waiting: make(map[int]chan cdpReply), done: make(chan struct{})}
	c.cmd = exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-dev-shm-usage", "--remote-debugging-pipe",
		"--user-data-dir="+t.TempDir(), "about:blank")
	c.cmd.ExtraFiles = []*os.File{chrIn, chrOut}
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	chrIn.Close()
	chrOut.Close()
	// The reader goroutine: hands each reply to its caller; returns when Chromium exits.
	go func() {
		defer close(c.done)
		r := bufio.NewReader(fromChr)
		for {
			msg, err := r.ReadBytes(0)
			if err != nil {
				return
			}
			var m struct {
				ID int `json:"id"`
				cdpReply
			}
			if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
				continue // an event
			}
			c.mu.Lock()
			ch := c.waiting[m.ID]
			delete(c.waiting, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m.cdpReply
			}
		}
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
		toChr.Close()
		fromChr.Close()
		<-c.done
	})
	return c
}

// call sends one command (to the page session when session is set) and decodes its result
// into out.
func (c *cdp) call(session, method string, params, out any) error {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan cdpReply, 1) // the reader never blocks handing over the reply
	c.waiting[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := c.toChr.Write(append(b, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out == nil {
			return nil
		}
		return json.Unmarshal(r.Result, out)
	case <-c.done:
		return fmt.Errorf("%s: chromium exited; stderr:\n%s", method, c.stderr.String())
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: no answer from chromium within 30s", method)
	}
}

// open opens url in a new tab and returns the tab's session.
func (c *cdp) open(url string) (string, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call("", "Target.createTarget", map[string]any{"url": url}, &target); err != nil {
		return "", err
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	err := c.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	return attached.SessionID, err
}

// eval evaluates a JavaScript expression in the page and decodes its JSON value into out.
func (c *cdp) eval(session, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	err := c.call(session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return errors.New("javascript: " + r.ExceptionDetails.Text)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// pageRow is one node row as the page shows it.
type pageRow struct {
	Node, State, Cut, Lag string
}

// rowsJS reads the node table of the page.
const rowsJS = `[...document.querySelectorAll("#nodes tr")].map(r => ({Node: r.dataset.node, State: r.dataset.state, Cut: r.dataset.cut, Lag: r.dataset.lag}))`

var consoleRE = regexp.MustCompile(`cluster view: (http://\S+)`)

// TestRaftkv_BrowserClusterView loads the dev console of `raftkv -dev` in headless Chromium,
// sees three nodes and one leader, presses crash on the leader, and sees the page show a new
// leader and the old one down, within a bound derived from the election timeout.
func TestRaftkv_BrowserClusterView(t *testing.T) {
	chromium := chromiumPath(t)
	const timeout = 300 * time.Millisecond // heartbeat and election timeout of the dev nodes
	p := &proc{id: "dev", args: []string{"dev", "--dev_base_port=0",
		"--heartbeat_timeout=" + timeout.String(), "--election_timeout=" + timeout.String()}}
	p.start(t)
	defer p.kill()
	var console string
	if !poll(20*time.Second, func() bool {
		m := consoleRE.FindStringSubmatch(p.stdout.String())
		if m != nil && strings.Contains(p.stdout.String(), "Press Ctrl-C") {
			console = m[1]
		}
		return console != ""
	}) {
		t.Fatalf("no banner with the cluster view; stdout %q stderr %q", p.stdout.String(), p.stderr.String())
	}

	browser := startChromium(t, chromium)
	page, err := browser.open(console)
	if err != nil {
		t.Fatal(err)
	}
	var rows []pageRow
	leaderOf := func(rows []pageRow) (leader string, leaders, down int) {
		for _, r := range rows {
			switch r.State {
			case "leader":
				leader, leaders = r.Node, leaders+1
			case "down":
				down++
			}
		}
		return leader, leaders, down
	}
	waitRows := func(limit time.Duration, what string, cond func([]pageRow) bool) time.Duration {
		t.Helper()
		start := time.Now()
		var lastErr error
		if !poll(limit, func() bool {
			rows = nil
			lastErr = browser.eval(page, rowsJS, &rows)
			return lastErr == nil && cond(rows)
		}) {
			var diag string
			_ = browser.eval(page, `location.href + " :: " + document.body.innerText.slice(0, 300)`, &diag)
			t.Fatalf("page never showed %s within %v: rows %+v, error %v; page: %s", what, limit, rows, lastErr, diag)
		}
		return time.Since(start)
	}
	waitRows(20*time.Second, "three nodes and one leader", func(rows []pageRow) bool {
		_, leaders, down := leaderOf(rows)
		return len(rows) == 3 && leaders == 1 && down == 0
	})
	old, _, _ := leaderOf(rows)
	press(t, browser, page, "crash", old)
	// A follower notices the leader is gone after a random timeout in [T, 2T), and an election
	// round takes less than 2T; the page polls every 300ms. The bound leaves room for a
	// loaded machine running the suite under -race.
	bound := 4*timeout + 4*timeout + 2*time.Second
	took := waitRows(bound, "a new leader with the old one down", func(rows []pageRow) bool {
		leader, leaders, down := leaderOf(rows)
		return leaders == 1 && leader != old && down == 1
	})
	t.Logf("crash of leader %s: the page showed the new leader after %v (election timeout %v)", old, took.Round(time.Millisecond), timeout)

	// Restart the old leader, cut a follower off, write: the page shows it falling behind.
	// Heal it: it catches up.
	press(t, browser, page, "restart", old)
	waitRows(20*time.Second, "the old leader back up", func(rows []pageRow) bool {
		_, leaders, down := leaderOf(rows)
		return leaders == 1 && down == 0
	})
	leader, _, _ := leaderOf(rows)
	cut := old
	if cut == leader {
		cut = rows[0].Node
		if cut == leader {
			cut = rows[1].Node
		}
	}
	press(t, browser, page, "cut", cut)
	writes := 0
	if !poll(20*time.Second, func() bool {
		// A write may meet an election on a loaded machine (300ms timeouts under -race):
		// retry until five went through.
		if code, _ := call("POST", console+"ui/dev/write?key=while-cut-"+strconv.Itoa(writes), ""); code == 200 {
			writes++
		}
		return writes == 5
	}) {
		t.Fatalf("only %d of 5 writes succeeded while node %s was cut off", writes, cut)
	}
	rowOf := func(rows []pageRow, id string) pageRow {
		for _, r := range rows {
			if r.Node == id {
				return r
			}
		}
		return pageRow{}
	}
	waitRows(20*time.Second, "the cut-off node lagging by 5 entries or more", func(rows []pageRow) bool {
		r := rowOf(rows, cut)
		lag, err := strconv.Atoi(r.Lag)
		return r.Cut == "yes" && err == nil && lag >= 5
	})
	if *screenshotPath != "" {
		writeScreenshot(t, browser, page, *screenshotPath)
	}
	press(t, browser, page, "heal", cut)
	waitRows(20*time.Second, "the healed node caught up", func(rows []pageRow) bool {
		r := rowOf(rows, cut)
		return r.Cut == "no" && r.Lag == "0"
	})

	var elections int
	if err := browser.eval(page, `document.querySelectorAll("#elections li").length`, &elections); err != nil || elections < 2 {
		t.Errorf("page lists %d elections (%v), want at least 2", elections, err)
	}
}

// press clicks the page's button for action on node id.
func press(t *testing.T, browser *cdp, page, action, id string) {
	t.Helper()
	js := fmt.Sprintf(`document.querySelector('button[data-action="%s"][data-node="%s"]').click()`, action, id)
	if err := browser.eval(page, js, nil); err != nil {
		t.Fatalf("pressing %s on node %s: %v", action, id, err)
	}
}

// writeScreenshot saves a PNG of the page at a fixed size.
func writeScreenshot(t *testing.T, browser *cdp, page, path string) {
	t.Helper()
	err := browser.call(page, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": 860, "height": 470, "deviceScaleFactor": 1, "mobile": false}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var shot struct {
		Data string `json:"data"`
	}
	if err := browser.call(page, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", path, len(png))
}
