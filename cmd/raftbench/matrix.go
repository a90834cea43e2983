package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// cell is one combination of the -matrix axes.
type cell struct {
	transport, store string
	size, clients    int
}

// matrixCells expands the -matrix-* axes, transports outermost and clients innermost.
func (c config) matrixCells() ([]cell, error) {
	transports := splitList(c.matrixTransports)
	stores := splitList(c.matrixStores)
	sizes, err := intList("-matrix-sizes", c.matrixSizes)
	if err != nil {
		return nil, err
	}
	clients, err := intList("-matrix-clients", c.matrixClients)
	if err != nil {
		return nil, err
	}
	var cells []cell
	for _, t := range transports {
		for _, s := range stores {
			for _, size := range sizes {
				for _, n := range clients {
					cc := c
					cc.matrix, cc.transport, cc.store, cc.size, cc.clients = false, t, s, size, n
					if err := cc.validate(); err != nil {
						return nil, err
					}
					cells = append(cells, cell{transport: t, store: s, size: size, clients: n})
				}
			}
		}
	}
	if len(cells) == 0 {
		return nil, fmt.Errorf("%w: -matrix with an empty axis", errUsage)
	}
	return cells, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func intList(flag, s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %q is not a number", errUsage, flag, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// childArgs are the flags that run one cell on its own with -json, carrying over every other
// setting of cfg.
func (c config) childArgs(x cell) []string {
	args := []string{
		"-json", "-transport", x.transport, "-store", x.store,
		"-size", strconv.Itoa(x.size), "-clients", strconv.Itoa(x.clients),
		"-nodes", strconv.Itoa(c.nodes), "-fsync=" + strconv.FormatBool(c.fsync),
		"-duration", c.duration.String(), "-ops", strconv.Itoa(c.ops), "-timeout", c.timeout.String(),
		"-max-append-entries", strconv.Itoa(c.maxAppend), "-heartbeat-timeout", c.heartbeat.String(),
		"-seed", strconv.FormatInt(c.seed, 10), "-log-level", c.logLevel,
	}
	if c.dir != "" {
		args = append(args, "-dir", c.dir)
	}
	if c.read != "" {
		args = append(args, "-read", c.read)
	}
	return args
}

// runMatrix runs every cell in a child process of this same binary, one after the other, and
// copies each child's JSON line to stdout. A fresh process per cell keeps each run's peak RSS
// its own and leaves no garbage of one run to the next.
func runMatrix(cfg config, stdout, stderr io.Writer) error {
	cells, err := cfg.matrixCells()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("raftbench: finding own binary for -matrix: %w", err)
	}
	for i, x := range cells {
		fmt.Fprintf(stderr, "raftbench: matrix run %d/%d: transport %s, store %s, %d B, %d clients\n",
			i+1, len(cells), x.transport, x.store, x.size, x.clients)
		cmd := exec.Command(self, cfg.childArgs(x)...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("raftbench: matrix run %d (%+v): %w", i+1, x, err)
		}
	}
	return nil
}
