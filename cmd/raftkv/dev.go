package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/cmd/raftkv/kv"
)

// devNodes is the size of the dev cluster.
const devNodes = 3

// devReadyTimeout bounds the wait for a leader and every node's registration before the
// banner is printed anyway.
const devReadyTimeout = 15 * time.Second

// runDev runs a 3-node cluster in this process on loopback, with real TCP transports and
// durable stores in a fresh temporary directory that is removed on exit.
func runDev(ctx context.Context, o *options, sink http.Handler, stdout, stderr io.Writer) error {
	raftAddrs, httpAddrs, err := devAddrs(o.devBasePort)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "raftkv-dev-")
	if err != nil {
		return fmt.Errorf("creating the data directory: %w", err)
	}
	defer os.RemoveAll(dir)
	var cluster []raft.Server
	for i, a := range raftAddrs {
		cluster = append(cluster, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(strconv.Itoa(i + 1)), Address: raft.ServerAddress(a)})
	}
	consoleAddr, err := devConsoleAddr(o.devBasePort)
	if err != nil {
		return err
	}
	nodes := newDevCluster(o.requestTimeout) // devconsole.go: nodes the console can crash and cut off
	for i := range cluster {
		id := strconv.Itoa(i + 1)
		conf := o.nodeConfig(id, raftAddrs[i], httpAddrs[i], filepath.Join(dir, "node-"+id), sink, stderr)
		conf.Join, conf.HTTPAdvertise, conf.Cluster = "", "", cluster
		// A fresh temporary directory: there is no earlier run whose votes could be lost.
		conf.ForceBootstrap = true
		if i == 0 {
			if err := checkRaftConfig(conf.Raft); err != nil {
				return err
			}
		}
		if err := nodes.add(conf); err != nil {
			_ = nodes.close()
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("dev node %s: %w (-dev_base_port=0 picks free ports)", id, err)
			}
			return fmt.Errorf("dev node %s: %w", id, err)
		}
	}
	console, err := startDevConsole(consoleAddr, nodes)
	if err != nil {
		_ = nodes.close()
		return err
	}
	waitDevReady(ctx, nodes.running())
	printBanner(stdout, dir, raftAddrs, httpAddrs, console.addr)
	<-ctx.Done()
	fmt.Fprintln(stdout, "shutting down")
	return errors.Join(console.close(), nodes.close())
}

// devAddrs returns the raft and HTTP addresses of the dev nodes: node i (from 1) serves HTTP
// on base+i and raft on base+100+i, so the default base 7000 gives the HTTP ports
// 7001-7003 the README's curl lines use. Base 0 picks free ports.
func devAddrs(base int) (raftAddrs, httpAddrs []string, err error) {
	if base < 0 || base+100+devNodes > 65535 {
		return nil, nil, fmt.Errorf("--dev_base_port %d leaves no room for %d nodes", base, devNodes)
	}
	for i := 0; i < devNodes; i++ {
		if base == 0 {
			r, err1 := freeLoopbackAddr()
			h, err2 := freeLoopbackAddr()
			if err := errors.Join(err1, err2); err != nil {
				return nil, nil, err
			}
			raftAddrs, httpAddrs = append(raftAddrs, r), append(httpAddrs, h)
			continue
		}
		raftAddrs = append(raftAddrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(base+100+i+1)))
		httpAddrs = append(httpAddrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i+1)))
	}
	return raftAddrs, httpAddrs, nil
}

// freeLoopbackAddr asks the kernel for a free loopback port. Another process may take it
// before we bind it again; starting the node then fails with a clear error.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitDevReady waits until one node leads and every node's HTTP address is registered, so
// the curl lines of the banner work at once, but never longer than devReadyTimeout.
func waitDevReady(ctx context.Context, nodes []*kv.Node) {
	ctx, cancel := context.WithTimeout(ctx, devReadyTimeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ready := true
		for _, n := range nodes {
			_, leader := n.Raft().LeaderWithID()
			ready = ready && leader != "" && n.FSM().Members() == len(nodes)
		}
		if ready {
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// printBanner shows where the nodes are and what to try.
func printBanner(w io.Writer, dir string, raftAddrs, httpAddrs []string, consoleAddr string) {
	var b strings.Builder
	fmt.Fprintf(&b, "raftkv dev cluster: %d nodes, data in %s (removed on exit)\n", len(httpAddrs), dir)
	fmt.Fprintf(&b, "  cluster view: http://%s/  (live, with crash, restart, cut off and heal)\n", consoleAddr)
	for i := range httpAddrs {
		fmt.Fprintf(&b, "  node %d: http://%s  (raft %s)\n", i+1, httpAddrs[i], raftAddrs[i])
	}
	h := func(i int) string { return "http://" + httpAddrs[i%len(httpAddrs)] }
	b.WriteString("\nTry:\n")
	fmt.Fprintf(&b, "  curl '%s/set?key=hello&value=world'\n", h(0))
	fmt.Fprintf(&b, "  curl '%s/get?key=hello'\n", h(1))
	fmt.Fprintf(&b, "  curl -X PUT --data-binary 'bar' %s/kv/foo\n", h(2))
	fmt.Fprintf(&b, "  curl '%s/kv/foo?consistency=stale'\n", h(0))
	fmt.Fprintf(&b, "  curl -X DELETE %s/kv/foo\n", h(1))
	fmt.Fprintf(&b, "  curl %s/status\n", h(0))
	b.WriteString("\nPress Ctrl-C to stop.\n")
	_, _ = io.WriteString(w, b.String())
}
