package memnet

import (
	"testing"

	"github.com/raftkit/raft"
)

func TestNetwork_LinkFaults(t *testing.T) {
	all := []raft.ServerAddress{"a", "b", "c", "d"}
	cases := []struct {
		name  string
		apply func(n *Network)
		down  []link
	}{
		{"none", func(*Network) {}, nil},
		{"cut", func(n *Network) { n.Cut("a", "b") }, []link{{"a", "b"}}},
		{"disconnect", func(n *Network) { n.Disconnect("a", "b") }, []link{{"a", "b"}, {"b", "a"}}},
		{"isolate", func(n *Network) { n.Isolate("c") },
			[]link{{"a", "c"}, {"b", "c"}, {"d", "c"}, {"c", "a"}, {"c", "b"}, {"c", "d"}}},
		{"partition", func(n *Network) { n.Partition([]raft.ServerAddress{"a", "b"}, []raft.ServerAddress{"c"}) },
			[]link{{"a", "c"}, {"b", "c"}, {"c", "a"}, {"c", "b"}, {"a", "d"}, {"b", "d"}, {"c", "d"}, {"d", "a"}, {"d", "b"}, {"d", "c"}}},
		{"repartition", func(n *Network) {
			n.Partition([]raft.ServerAddress{"a"}, []raft.ServerAddress{"b", "c", "d"})
			n.Partition([]raft.ServerAddress{"a", "b", "c", "d"})
		}, nil},
		{"healed", func(n *Network) {
			n.Cut("a", "b")
			n.Isolate("c")
			n.Partition([]raft.ServerAddress{"a"})
			n.Heal()
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := New(1)
			tc.apply(n)
			down := make(map[link]bool)
			for _, l := range tc.down {
				down[l] = true
			}
			for _, from := range all {
				for _, to := range all {
					if up := n.faults.LinkUp(from, to); up == down[link{from, to}] {
						t.Errorf("link %s->%s up = %v, want %v", from, to, up, !up)
					}
				}
			}
		})
	}
}
