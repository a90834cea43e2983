package kv

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrBadCommand is what Apply reports for a log entry that does not decode to a known
// command. Every node decodes the same bytes the same way, so every node reports it alike and
// the state stays identical.
var ErrBadCommand = errors.New("kv: malformed command")

// Op names a command kind.
type Op string

const (
	// OpSet stores Value under Key.
	OpSet Op = "set"
	// OpDelete removes Key.
	OpDelete Op = "delete"
	// OpRegister records that the node with raft ID Key serves HTTP at Value.
	OpRegister Op = "register"
)

// Command is one replicated write. It travels through the Raft log as JSON: readable in a
// debugger and stable across versions, at the cost of some bytes per entry.
type Command struct {
	Op    Op     `json:"op"`
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
}

// Encode returns the log payload for c.
func (c Command) Encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		// A struct of three strings always marshals.
		panic(fmt.Sprintf("kv: encoding command: %v", err))
	}
	return b
}

// DecodeCommand parses a log payload. It never panics on bad input: errors wrap
// ErrBadCommand.
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	switch c.Op {
	case OpSet, OpDelete, OpRegister:
	default:
		return Command{}, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
	}
	if c.Key == "" {
		return Command{}, fmt.Errorf("%w: empty key", ErrBadCommand)
	}
	return c, nil
}

// Result is what FSM.Apply returns for each command; the node that proposed the command
// receives it from ApplyFuture.Response.
type Result struct {
	// Existed says whether the key (or member) was present before the command.
	Existed bool
	// Err is set when the entry was not a valid command; nothing changed then.
	Err error
}
