package raft

import (
	"errors"
	"testing"
)

func TestConfiguration_EncodeDecodeRoundTrip(t *testing.T) {
	c := Configuration{Servers: []Server{
		{Suffrage: Voter, ID: "a", Address: "10.0.0.1:7000"},
		{Suffrage: Nonvoter, ID: "b", Address: "10.0.0.2:7000"},
	}}
	got, err := decodeConfiguration(encodeConfiguration(c))
	if err != nil {
		t.Fatal(err)
	}
	if !sameConfiguration(got, c) {
		t.Fatalf("round trip gave %+v, want %+v", got, c)
	}
}

func TestConfiguration_ValidateRejectsBadConfigurations(t *testing.T) {
	v := func(id ServerID, addr ServerAddress) Server { return Server{Suffrage: Voter, ID: id, Address: addr} }
	cases := map[string]Configuration{
		"empty":          {},
		"no voter":       {Servers: []Server{{Suffrage: Nonvoter, ID: "a", Address: "x"}}},
		"empty id":       {Servers: []Server{v("", "x")}},
		"empty address":  {Servers: []Server{v("a", "")}},
		"duplicate id":   {Servers: []Server{v("a", "x"), v("a", "y")}},
		"duplicate addr": {Servers: []Server{v("a", "x"), v("b", "x")}},
		"bad suffrage":   {Servers: []Server{v("a", "x"), {Suffrage: 7, ID: "b", Address: "y"}}},
	}
	for name, c := range cases {
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfiguration) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidConfiguration", name, err)
		}
	}
}

// FuzzDecodeConfiguration feeds arbitrary bytes, as a peer or a corrupt disk could, to the
// configuration decoder: it must return a valid configuration or an error, never panic.
func FuzzDecodeConfiguration(f *testing.F) {
	f.Add(encodeConfiguration(Configuration{Servers: []Server{{Suffrage: Voter, ID: "a", Address: "x"}}}))
	f.Add([]byte{})
	f.Add([]byte{0x81, 0xa7, 'S', 'e', 'r', 'v', 'e', 'r', 's', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xc1})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeConfiguration(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfiguration) {
				t.Fatalf("error %v does not match ErrInvalidConfiguration", err)
			}
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Fatalf("decoded an invalid configuration: %v", verr)
		}
	})
}
