package kv

import (
	"strings"
	"testing"

	"github.com/raftkit/raft"
)

func TestParseCluster_Valid(t *testing.T) {
	got, err := ParseCluster("1/127.0.0.1:7000, 2/127.0.0.1:8000,3/[::1]:9000")
	if err != nil {
		t.Fatal(err)
	}
	want := []raft.Server{
		{Suffrage: raft.Voter, ID: "1", Address: "127.0.0.1:7000"},
		{Suffrage: raft.Voter, ID: "2", Address: "127.0.0.1:8000"},
		{Suffrage: raft.Voter, ID: "3", Address: "[::1]:9000"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("server %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseCluster_Invalid(t *testing.T) {
	cases := map[string]string{
		"":                                   "empty cluster",
		"1=127.0.0.1:7000":                   "not id/host:port",
		"/127.0.0.1:7000":                    "not id/host:port",
		"1/":                                 "not id/host:port",
		"1/127.0.0.1":                        "missing port",
		"1/127.0.0.1:http":                   "port in 1-65535",
		"1/127.0.0.1:70000":                  "port in 1-65535",
		"1/:7000":                            "port in 1-65535",
		"1/127.0.0.1:7000,1/127.0.0.1:8000":  "duplicate id 1",
		"1/127.0.0.1:7000,2/127.0.0.1:7000":  "duplicate address 127.0.0.1:7000",
		"1/127.0.0.1:7000,,2/127.0.0.1:8000": "not id/host:port",
	}
	for in, want := range cases {
		_, err := ParseCluster(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCluster(%q) = %v, want an error containing %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseCluster(%q) error spans lines: %q", in, err)
		}
	}
}
