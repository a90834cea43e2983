package kv

import (
	"encoding/binary"
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

// Command is one replicated write. Key and Value are byte strings: any byte sequence, valid
// UTF-8 or not, survives the log, snapshots and restores unchanged.
type Command struct {
	Op    Op     `json:"op"`
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
}

// The binary entry format (commandVersion 1):
//
//	offset 0  1 byte    commandVersion
//	offset 1  1 byte    op code (opCodes)
//	offset 2  uvarint   key length k
//	          k bytes   key
//	          the rest  value (empty for a delete)
//
// Two bytes plus a one- or two-byte length of overhead per entry, where JSON added about 30
// and turned every invalid UTF-8 byte into U+FFFD. Entries written by older versions of
// raftkv are JSON objects; they start with '{', which is not a version byte, so DecodeCommand
// still reads them (restarting on an old data directory keeps working).
const commandVersion = 1

var opCodes = map[Op]byte{OpSet: 1, OpDelete: 2, OpRegister: 3}

var opsByCode = map[byte]Op{1: OpSet, 2: OpDelete, 3: OpRegister}

// Encode returns the log payload for c.
func (c Command) Encode() []byte {
	b := make([]byte, 0, 2+binary.MaxVarintLen64+len(c.Key)+len(c.Value))
	b = append(b, commandVersion, opCodes[c.Op])
	b = binary.AppendUvarint(b, uint64(len(c.Key)))
	b = append(b, c.Key...)
	return append(b, c.Value...)
}

// DecodeCommand parses a log payload. It never panics on bad input: errors wrap
// ErrBadCommand.
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	switch {
	case len(data) == 0:
		return Command{}, fmt.Errorf("%w: empty entry", ErrBadCommand)
	case data[0] == '{':
		if err := json.Unmarshal(data, &c); err != nil {
			return Command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
	case data[0] == commandVersion:
		var err error
		if c, err = decodeBinary(data[1:]); err != nil {
			return Command{}, err
		}
	default:
		return Command{}, fmt.Errorf("%w: unknown format version %d", ErrBadCommand, data[0])
	}
	switch c.Op {
	case OpSet, OpRegister:
	case OpDelete:
		if c.Value != "" {
			return Command{}, fmt.Errorf("%w: a delete carries a value", ErrBadCommand)
		}
	default:
		return Command{}, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
	}
	if c.Key == "" {
		return Command{}, fmt.Errorf("%w: empty key", ErrBadCommand)
	}
	return c, nil
}

// decodeBinary reads the op code, key and value after the version byte.
func decodeBinary(data []byte) (Command, error) {
	if len(data) == 0 {
		return Command{}, fmt.Errorf("%w: no op code", ErrBadCommand)
	}
	op, ok := opsByCode[data[0]]
	if !ok {
		return Command{}, fmt.Errorf("%w: unknown op code %d", ErrBadCommand, data[0])
	}
	keyLen, n := binary.Uvarint(data[1:])
	rest := data[1:]
	if n <= 0 || keyLen > uint64(len(rest)-n) {
		return Command{}, fmt.Errorf("%w: key length", ErrBadCommand)
	}
	rest = rest[n:]
	return Command{Op: op, Key: string(rest[:keyLen]), Value: string(rest[keyLen:])}, nil
}

// Result is what FSM.Apply returns for each command; the node that proposed the command
// receives it from ApplyFuture.Response.
type Result struct {
	// Existed says whether the key (or member) was present before the command.
	Existed bool
	// Err is set when the entry was not a valid command; nothing changed then.
	Err error
}
