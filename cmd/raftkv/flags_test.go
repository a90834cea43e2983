package main

import (
	"io"
	"testing"
	"time"
)

func TestParseFlags_OneTimeoutSetsBoth(t *testing.T) {
	cases := []struct {
		args                []string
		heartbeat, election time.Duration
	}{
		{nil, time.Second, time.Second},
		{[]string{"--heartbeat_timeout=2s"}, 2 * time.Second, 2 * time.Second},
		{[]string{"--election_timeout=3s"}, 3 * time.Second, 3 * time.Second},
		{[]string{"--heartbeat_timeout=2s", "--election_timeout=4s"}, 2 * time.Second, 4 * time.Second},
	}
	for _, c := range cases {
		o, err := parseFlags(c.args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if o.heartbeat != c.heartbeat || o.election != c.election {
			t.Errorf("%v: heartbeat %v election %v, want %v %v", c.args, o.heartbeat, o.election, c.heartbeat, c.election)
		}
		if err := checkRaftConfig(o.nodeConfig("1", "a:1", "a:2", "d", nil, io.Discard).Raft); err != nil {
			t.Errorf("%v: the derived configuration is invalid: %v", c.args, err)
		}
	}
}

func TestLoadToken(t *testing.T) {
	if tok, err := loadToken("", "  from-env \n"); err != nil || tok != "from-env" {
		t.Fatalf("env token: %q %v", tok, err)
	}
	if tok, err := loadToken("", ""); err != nil || tok != "" {
		t.Fatalf("no token: %q %v", tok, err)
	}
	if _, err := loadToken("/nonexistent/token", "x"); err == nil {
		t.Fatal("a missing token file was accepted")
	}
}
