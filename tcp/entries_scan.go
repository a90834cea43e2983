package tcp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxEntriesPerAppend bounds how many entries one AppendEntries frame may carry. The core
// sends at most raft's maxAppendEntriesLimit (1024); the margin leaves room for other senders.
// Without a bound, a frame of one-byte entries would decode into millions of raft.Log values,
// about a hundred times the frame's size in memory.
const maxEntriesPerAppend = 4096

var errScan = errors.New("not a well-formed msgpack value")

// checkEntriesCount reads the length of the Entries array of an encoded AppendEntriesRequest
// without decoding anything, and refuses a frame that announces more than maxEntriesPerAppend
// entries. It walks only the top-level map; a body it cannot walk is malformed.
func checkEntriesCount(body []byte) error {
	s := scanner{b: body}
	n, err := s.mapLen()
	if err != nil {
		return fmt.Errorf("%w: append entries body: %v", ErrMalformedFrame, err)
	}
	for i := 0; i < n; i++ {
		key, err := s.str()
		if err != nil {
			return fmt.Errorf("%w: append entries key: %v", ErrMalformedFrame, err)
		}
		if key == "Entries" && s.peekArray() {
			count, err := s.arrayLen()
			if err != nil {
				return fmt.Errorf("%w: append entries: %v", ErrMalformedFrame, err)
			}
			if count > maxEntriesPerAppend {
				return fmt.Errorf("%w: %d entries in one append entries, at most %d", ErrMalformedFrame, count, maxEntriesPerAppend)
			}
			return nil
		}
		if err := s.skip(0); err != nil {
			return fmt.Errorf("%w: append entries value: %v", ErrMalformedFrame, err)
		}
	}
	return nil
}

// scanner walks msgpack bytes without allocating.
type scanner struct {
	b   []byte
	pos int
}

// maxScanDepth bounds nesting, so a hostile body cannot recurse deeply.
const maxScanDepth = 16

func (s *scanner) next(n int) ([]byte, error) {
	if n < 0 || len(s.b)-s.pos < n {
		return nil, errScan
	}
	p := s.b[s.pos : s.pos+n]
	s.pos += n
	return p, nil
}

func (s *scanner) uint(n int) (int, error) {
	p, err := s.next(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return int(p[0]), nil
	case 2:
		return int(binary.BigEndian.Uint16(p)), nil
	default:
		return int(binary.BigEndian.Uint32(p)), nil
	}
}

func (s *scanner) peekArray() bool {
	if s.pos >= len(s.b) {
		return false
	}
	c := s.b[s.pos]
	return c&0xf0 == 0x90 || c == 0xdc || c == 0xdd
}

func (s *scanner) mapLen() (int, error) {
	c, err := s.next(1)
	if err != nil {
		return 0, err
	}
	switch {
	case c[0]&0xf0 == 0x80:
		return int(c[0] & 0x0f), nil
	case c[0] == 0xde:
		return s.uint(2)
	case c[0] == 0xdf:
		return s.uint(4)
	}
	return 0, errScan
}

func (s *scanner) arrayLen() (int, error) {
	c, err := s.next(1)
	if err != nil {
		return 0, err
	}
	switch {
	case c[0]&0xf0 == 0x90:
		return int(c[0] & 0x0f), nil
	case c[0] == 0xdc:
		return s.uint(2)
	case c[0] == 0xdd:
		return s.uint(4)
	}
	return 0, errScan
}

func (s *scanner) str() (string, error) {
	c, err := s.next(1)
	if err != nil {
		return "", err
	}
	var n int
	switch {
	case c[0]&0xe0 == 0xa0:
		n = int(c[0] & 0x1f)
	case c[0] == 0xd9, c[0] == 0xc4:
		n, err = s.uint(1)
	case c[0] == 0xda, c[0] == 0xc5:
		n, err = s.uint(2)
	case c[0] == 0xdb, c[0] == 0xc6:
		n, err = s.uint(4)
	default:
		return "", errScan
	}
	if err != nil {
		return "", err
	}
	p, err := s.next(n)
	return string(p), err
}

// skip moves past one value of any type.
func (s *scanner) skip(depth int) error {
	if depth > maxScanDepth {
		return errScan
	}
	c, err := s.next(1)
	if err != nil {
		return err
	}
	b := c[0]
	var n int
	switch {
	case b <= 0x7f, b >= 0xe0, b == 0xc0, b == 0xc2, b == 0xc3:
		return nil
	case b&0xf0 == 0x80:
		return s.skipN(2*int(b&0x0f), depth)
	case b&0xf0 == 0x90:
		return s.skipN(int(b&0x0f), depth)
	case b&0xe0 == 0xa0:
		_, err = s.next(int(b & 0x1f))
		return err
	}
	switch b {
	case 0xcc, 0xd0:
		_, err = s.next(1)
	case 0xcd, 0xd1:
		_, err = s.next(2)
	case 0xca, 0xce, 0xd2:
		_, err = s.next(4)
	case 0xcb, 0xcf, 0xd3:
		_, err = s.next(8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext: type byte + 1, 2, 4, 8, 16
		_, err = s.next(1 + 1<<(b-0xd4))
	case 0xc4, 0xd9:
		if n, err = s.uint(1); err == nil {
			_, err = s.next(n)
		}
	case 0xc5, 0xda:
		if n, err = s.uint(2); err == nil {
			_, err = s.next(n)
		}
	case 0xc6, 0xdb:
		if n, err = s.uint(4); err == nil {
			_, err = s.next(n)
		}
	case 0xc7, 0xc8, 0xc9: // ext: length, type byte, data
		if n, err = s.uint(1 << (b - 0xc7)); err == nil {
			_, err = s.next(n + 1)
		}
	case 0xdc, 0xdd:
		s.pos--
		if n, err = s.arrayLen(); err == nil {
			err = s.skipN(n, depth)
		}
	case 0xde, 0xdf:
		s.pos--
		if n, err = s.mapLen(); err == nil {
			err = s.skipN(2*n, depth)
		}
	default:
		return errScan
	}
	return err
}

func (s *scanner) skipN(n, depth int) error {
	if n > len(s.b)-s.pos {
		return errScan // every value takes at least one byte
	}
	for i := 0; i < n; i++ {
		if err := s.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}
