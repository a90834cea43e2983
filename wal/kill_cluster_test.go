//go:build unix

package wal

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftkit/raft"
	"github.com/raftkit/raft/internal/testnet"
	"github.com/raftkit/raft/raftest"
	"github.com/raftkit/raft/tcp"
)

// The cluster kill test runs each node of a three-node cluster in a child process (the test
// binary re-executed) on a wal.Store, a FileSnapshotStore and the TCP transport, keeps
// clients writing, and kills a random node with SIGKILL at random moments while snapshots,
// log compaction and InstallSnapshot run; the node is restarted from its directory and
// rejoins. At the end every acknowledged write must be in every node's FSM exactly once.
//
// The parent talks to a child over its stdin and stdout, one line per message:
//
//	parent -> child: "apply <cmd>"   child -> parent: "ok <cmd>" or "err <cmd> <reason>"
//	parent -> child: "dump"          child -> parent: "entry <cmd>" per applied command, "end"
//	child -> parent: "leader <true|false>" on every leadership change
const (
	killClusterIDEnv    = "RAFTKIT_WAL_KILLCLUSTER_ID"
	killClusterDirEnv   = "RAFTKIT_WAL_KILLCLUSTER_DIR"
	killClusterPeersEnv = "RAFTKIT_WAL_KILLCLUSTER_PEERS" // id=addr,id=addr,...
)

var killClusterKills = flag.Int("killcluster.kills", 3, "SIGKILLs of cluster nodes per kill-cluster test run")

// killClusterConfig is the nodes' configuration: frequent snapshots and few trailing logs,
// so a node that was down a moment catches up through InstallSnapshot.
func killClusterConfig(id raft.ServerID, logger hclog.Logger) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = id
	conf.Logger = logger
	conf.HeartbeatTimeout = 500 * time.Millisecond
	conf.ElectionTimeout = 500 * time.Millisecond
	conf.LeaderLeaseTimeout = 500 * time.Millisecond
	conf.SnapshotThreshold = 64
	conf.TrailingLogs = 32
	conf.SnapshotInterval = 100 * time.Millisecond
	return conf
}

func TestWALCluster_KillNineUnderLoadKeepsEveryAcknowledgedWrite(t *testing.T) {
	if id := os.Getenv(killClusterIDEnv); id != "" {
		if err := runKillClusterChild(raft.ServerID(id)); err != nil {
			fmt.Fprintln(os.Stderr, "kill-cluster child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	seed := seedFor(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	addrs := testnet.FreeLoopbackAddrs(t, 3)
	var peers []string
	for i, a := range addrs {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, a))
	}
	root := t.TempDir()
	kc := &killCluster{t: t, root: root, peers: strings.Join(peers, ",")}
	t.Cleanup(kc.killAll)
	for i := range addrs {
		kc.nodes = append(kc.nodes, &killNode{id: fmt.Sprintf("n%d", i+1)})
		kc.start(i)
	}
	acks := newKillAcks()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kc.client(w, acks, stop)
		}()
	}
	// Kill only under load: once the cluster elected a leader and took writes.
	if !raftest.Eventually(120*time.Second, func() bool { return acks.count() >= 50 }) {
		t.Fatalf("only %d writes acknowledged within 120s", acks.count())
	}
	for kill := 0; kill < *killClusterKills; kill++ {
		sleepUpTo(rng, 1500*time.Millisecond)
		i := rng.IntN(len(kc.nodes))
		t.Logf("kill -9 %s (%d writes acknowledged so far)", kc.nodes[i].id, acks.count())
		kc.kill(i)
		sleepUpTo(rng, 1500*time.Millisecond)
		kc.start(i)
	}
	sleepUpTo(rng, time.Second)
	close(stop)
	wg.Wait()
	final := "final"
	if !kc.applyUntil(final, time.Now().Add(60*time.Second)) {
		t.Fatal("no leader accepted the final write within 60s")
	}
	acks.ok(final)
	kc.check(acks)
	// What the kills ran into, from the nodes' logs across all their incarnations.
	var snapshots, installs int
	for _, n := range kc.nodes {
		logs := n.stderr.String()
		snapshots += strings.Count(logs, "snapshot complete")
		installs += strings.Count(logs, "installed snapshot")
	}
	t.Logf("%d snapshots taken, %d snapshots installed by InstallSnapshot", snapshots, installs)
	if snapshots == 0 {
		t.Fatal("no node took a snapshot: the test did not exercise snapshots under kills")
	}
}

// sleepUpTo waits a random time up to d, at least a tenth of it.
func sleepUpTo(rng *rand.Rand, d time.Duration) {
	time.Sleep(d/10 + time.Duration(rng.Int64N(int64(d))))
}

// killCluster is the parent's view of the child processes.
type killCluster struct {
	t     *testing.T
	root  string
	peers string
	mu    sync.Mutex // guards nodes' process fields
	nodes []*killNode
}

// killNode is one node's child process; a new one at every start.
type killNode struct {
	id     string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	inMu   sync.Mutex // one line at a time on stdin
	leader bool
	waits  map[string]chan string // command -> who waits for its outcome line
	dump   chan string            // lines of a dump in progress
	stderr *lockedWriter          // every incarnation's stderr, in order
}

func (kc *killCluster) start(i int) {
	kc.t.Helper()
	n := kc.nodes[i]
	cmd := exec.Command(os.Args[0], "-test.run=^TestWALCluster_KillNineUnderLoadKeepsEveryAcknowledgedWrite$", "-test.count=1")
	cmd.Env = append(os.Environ(), killClusterIDEnv+"="+n.id,
		killClusterDirEnv+"="+filepath.Join(kc.root, n.id), killClusterPeersEnv+"="+kc.peers)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		kc.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		kc.t.Fatal(err)
	}
	if n.stderr == nil {
		n.stderr = &lockedWriter{}
	}
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		kc.t.Fatal(err)
	}
	kc.mu.Lock()
	n.cmd, n.stdin, n.leader, n.waits, n.dump = cmd, stdin, false, make(map[string]chan string), nil
	kc.mu.Unlock()
	go kc.read(n, cmd, stdout)
}

// lockedWriter collects a child's stderr, keeping the first 16 MiB.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 16<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// read dispatches a child's output lines until it dies.
func (kc *killCluster) read(n *killNode, cmd *exec.Cmd, stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		kind, rest, _ := strings.Cut(line, " ")
		kc.mu.Lock()
		current := n.cmd == cmd
		switch {
		case !current:
		case kind == "leader":
			n.leader = rest == "true"
		case kind == "ok" || kind == "err":
			name, _, _ := strings.Cut(rest, " ")
			if ch := n.waits[name]; ch != nil {
				ch <- line
				delete(n.waits, name)
			}
		case (kind == "entry" || kind == "end") && n.dump != nil:
			n.dump <- line
		}
		kc.mu.Unlock()
	}
	kc.mu.Lock()
	if n.cmd == cmd {
		n.leader = false
		for name, ch := range n.waits {
			ch <- "err " + name + " child died"
			delete(n.waits, name)
		}
	}
	kc.mu.Unlock()
}

func (kc *killCluster) kill(i int) {
	n := kc.nodes[i]
	kc.mu.Lock()
	cmd := n.cmd
	kc.mu.Unlock()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func (kc *killCluster) killAll() {
	for i, n := range kc.nodes {
		kc.mu.Lock()
		cmd := n.cmd
		kc.mu.Unlock()
		if cmd != nil && cmd.ProcessState == nil {
			kc.kill(i)
		}
		if kc.t.Failed() && n.stderr != nil {
			kc.t.Logf("%s stderr (last incarnation):\n%s", n.id, tail(n.stderr.String(), 8000))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// send writes one line to node n's child and registers a wait for the outcome of name.
func (kc *killCluster) send(n *killNode, name, line string) chan string {
	out := make(chan string, 1)
	kc.mu.Lock()
	n.waits[name] = out
	stdin := n.stdin
	kc.mu.Unlock()
	n.inMu.Lock()
	_, err := io.WriteString(stdin, line+"\n")
	n.inMu.Unlock()
	if err != nil {
		kc.mu.Lock()
		if n.waits[name] == out {
			delete(n.waits, name)
			out <- "err " + name + " write failed"
		}
		kc.mu.Unlock()
	}
	return out
}

// leader returns a node that says it leads, or nil.
func (kc *killCluster) leader() *killNode {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	for _, n := range kc.nodes {
		if n.leader {
			return n
		}
	}
	return nil
}

// apply tries cmd once on the leader: "ok", "notleader" (certainly not applied) or "unknown".
func (kc *killCluster) apply(cmd string) string {
	n := kc.leader()
	if n == nil {
		return "notleader"
	}
	select {
	case line := <-kc.send(n, cmd, "apply "+cmd):
		switch {
		case strings.HasPrefix(line, "ok "):
			return "ok"
		case strings.Contains(line, raft.ErrNotLeader.Error()) || strings.Contains(line, raft.ErrEnqueueTimeout.Error()):
			return "notleader" // certainly not applied
		}
		return "unknown"
	case <-time.After(30 * time.Second):
		return "unknown"
	}
}

// applyUntil retries cmd on whichever node leads until it is acknowledged or deadline.
func (kc *killCluster) applyUntil(cmd string, deadline time.Time) bool {
	for time.Now().Before(deadline) {
		if kc.apply(cmd) == "ok" {
			return true
		}
		time.Sleep(20 * time.Millisecond) // a client's retry pace, not synchronization
	}
	return false
}

// client writes unique commands until stop closes, retrying a command only while no node
// could have applied it.
func (kc *killCluster) client(w int, acks *killAcks, stop <-chan struct{}) {
	for seq := 0; ; seq++ {
		cmd := fmt.Sprintf("w%d-%d", w, seq)
		for {
			select {
			case <-stop:
				return
			default:
			}
			switch kc.apply(cmd) {
			case "ok":
				acks.ok(cmd)
			case "notleader":
				time.Sleep(10 * time.Millisecond) // a client's retry pace while no node leads
				continue
			}
			break
		}
	}
}

// check dumps every node's FSM once it applied the final write and checks the acks.
func (kc *killCluster) check(acks *killAcks) {
	t := kc.t
	for _, n := range kc.nodes {
		lines := make(chan string, 1024)
		kc.mu.Lock()
		n.dump = lines
		stdin := n.stdin
		kc.mu.Unlock()
		n.inMu.Lock()
		_, err := io.WriteString(stdin, "dump\n")
		n.inMu.Unlock()
		if err != nil {
			t.Fatalf("asking %s for its FSM: %v", n.id, err)
		}
		counts := make(map[string]int)
		timeout := time.After(60 * time.Second)
	read:
		for {
			select {
			case line := <-lines:
				if line == "end" {
					break read
				}
				counts[strings.TrimPrefix(line, "entry ")]++
			case <-timeout:
				t.Fatalf("%s did not dump its FSM within 60s", n.id)
			}
		}
		for cmd, c := range counts {
			if c > 1 {
				t.Fatalf("%s applied %q %d times", n.id, cmd, c)
			}
		}
		missing := 0
		for _, cmd := range acks.list() {
			if counts[cmd] != 1 {
				missing++
				t.Errorf("%s lacks acknowledged write %q", n.id, cmd)
			}
		}
		if missing > 0 {
			t.FailNow()
		}
		t.Logf("%s holds all %d acknowledged writes once (%d commands applied)", n.id, len(acks.list()), len(counts))
	}
}

// killAcks records the acknowledged writes.
type killAcks struct {
	mu    sync.Mutex
	acked []string
}

func newKillAcks() *killAcks { return &killAcks{} }

func (a *killAcks) ok(cmd string) {
	a.mu.Lock()
	a.acked = append(a.acked, cmd)
	a.mu.Unlock()
}

func (a *killAcks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.acked)
}

func (a *killAcks) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.acked...)
}

// runKillClusterChild runs one node until its stdin closes (or it is killed).
func runKillClusterChild(id raft.ServerID) error {
	dir := os.Getenv(killClusterDirEnv)
	var servers []raft.Server
	var self raft.ServerAddress
	for _, p := range strings.Split(os.Getenv(killClusterPeersEnv), ",") {
		pid, addr, _ := strings.Cut(p, "=")
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(pid), Address: raft.ServerAddress(addr)})
		if raft.ServerID(pid) == id {
			self = raft.ServerAddress(addr)
		}
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: os.Stderr})
	store, err := Open(filepath.Join(dir, "wal"))
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 2, nil)
	if err != nil {
		return err
	}
	trans, err := tcp.NewTransport(string(self), nil, tcp.Options{Logger: logger, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	conf := killClusterConfig(id, logger)
	err = raft.BootstrapCluster(conf, store, store, snaps, trans, raft.Configuration{Servers: servers})
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return err
	}
	fsm := raftest.NewRecordingFSM()
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
	if err != nil {
		return err
	}
	out := &childOut{w: bufio.NewWriter(os.Stdout)}
	go func() {
		for isLeader := range r.LeaderCh() {
			out.printf("leader %v", isLeader)
		}
	}()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		verb, arg, _ := strings.Cut(sc.Text(), " ")
		switch verb {
		case "apply":
			f := r.Apply([]byte(arg), 10*time.Second)
			go func() {
				if err := f.Error(); err != nil {
					out.printf("err %s %v", arg, err)
					return
				}
				out.printf("ok %s", arg)
			}()
		case "dump":
			go dumpWhenFinal(fsm, out)
		}
	}
	return r.Shutdown().Error()
}

// dumpWhenFinal waits until fsm applied the final write, then prints everything it applied.
func dumpWhenFinal(fsm *raftest.RecordingFSM, out *childOut) {
	isFinal := func(e raftest.Entry) bool { return string(e.Data) == "final" }
	if raftest.Eventually(50*time.Second, func() bool { return slices.ContainsFunc(fsm.Entries(), isFinal) }) {
		for _, e := range fsm.Entries() {
			out.printf("entry %s", e.Data)
		}
	}
	out.printf("end")
}

// childOut writes whole lines to stdout from several goroutines.
type childOut struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *childOut) printf(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, format+"\n", args...)
	_ = o.w.Flush()
}
