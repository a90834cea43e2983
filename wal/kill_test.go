//go:build unix

package wal

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/storetest"
)

// The kill test re-executes the test binary as a child that appends to a store and prints
// "acked N" after each StoreLogs returns; these variables select that mode.
const (
	killChildDirEnv  = "RAFTKIT_WAL_KILL_CHILD_DIR"
	killChildSeedEnv = "RAFTKIT_WAL_KILL_CHILD_SEED"
	// killChildRunFor bounds how long a child appends if nobody kills it.
	killChildRunFor = 30 * time.Second
	// killParentWait bounds how long the parent waits for a child before killing it anyway.
	killParentWait = 60 * time.Second
)

// killLog is the entry the child stores at index, so the parent can verify without sharing
// state with it.
func killLog(index uint64) *raft.Log { return storetest.MakeLog(index, 1, int(index*53%900)) }

func TestStore_KillNineKeepsAcknowledgedBatches(t *testing.T) {
	if dir := os.Getenv(killChildDirEnv); dir != "" {
		seed, _ := strconv.ParseUint(os.Getenv(killChildSeedEnv), 10, 64)
		if err := runKillChild(dir, seed); err != nil {
			fmt.Fprintln(os.Stderr, "kill child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	seed := seedFor(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	rounds := 5
	if testing.Short() {
		rounds = 2
	}
	dir := t.TempDir() // one store, killed and reopened again and again
	var acked uint64
	for round := 0; round < rounds; round++ {
		target := 1 + rng.IntN(80)
		got := runAndKill(t, dir, seed+uint64(round), target)
		acked = max(acked, got)
		verifyKilledStore(t, dir, acked)
	}
}

// runAndKill starts a child on dir, kills it with SIGKILL once it has acknowledged target
// batches, and returns the highest index it acknowledged.
func runAndKill(t *testing.T, dir string, seed uint64, target int) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStore_KillNineKeepsAcknowledgedBatches$", "-test.count=1")
	cmd.Env = append(os.Environ(), killChildDirEnv+"="+dir, killChildSeedEnv+"="+strconv.FormatUint(seed, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(killParentWait, func() { _ = cmd.Process.Kill() })
	defer watchdog.Stop()
	var acked uint64
	batches, killed := 0, false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() { // ends when the child dies and the pipe closes
		n, ok := strings.CutPrefix(sc.Text(), "acked ")
		if !ok {
			continue
		}
		if acked, err = strconv.ParseUint(n, 10, 64); err != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		if batches++; batches >= target && !killed {
			killed = cmd.Process.Kill() == nil
		}
	}
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("child ended before it was killed (%v, %d batches): %s", werr, batches, stderr.String())
	}
	t.Logf("killed the child after %d acknowledged batches, last acknowledged index %d", batches, acked)
	return acked
}

// runKillChild appends random batches of killLog entries until it is killed.
func runKillChild(dir string, seed uint64) error {
	s, err := Open(dir, WithSegmentSize(16<<10))
	if err != nil {
		return err
	}
	last, err := s.LastIndex()
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 5))
	for deadline := time.Now().Add(killChildRunFor); time.Now().Before(deadline); {
		batch := make([]*raft.Log, 1+rng.IntN(16))
		for i := range batch {
			batch[i] = killLog(last + 1 + uint64(i))
		}
		if err := s.StoreLogs(batch); err != nil {
			return err
		}
		last += uint64(len(batch))
		if _, err := fmt.Fprintf(os.Stdout, "acked %d\n", last); err != nil {
			return err
		}
	}
	return s.Close()
}

// verifyKilledStore checks that dir holds every acknowledged entry, and that whatever it holds
// beyond them is also exactly what the child wrote.
func verifyKilledStore(t *testing.T, dir string, acked uint64) {
	t.Helper()
	s, err := Open(dir, WithSegmentSize(16<<10))
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer mustClose(t, s)
	last, err := s.LastIndex()
	if err != nil || last < acked {
		t.Fatalf("after kill LastIndex = %d, %v; the child acknowledged %d", last, err, acked)
	}
	want := make([]*raft.Log, last)
	for i := range want {
		want[i] = killLog(uint64(i + 1))
	}
	storetest.CheckLogs(t, s, want)
	if rep := s.OpenReport(); rep.TailCut {
		t.Logf("open cut %d bytes at offset %d of %s: %s", rep.CutBytes, rep.CutOffset, rep.CutFile, rep.CutReason)
	}
}
