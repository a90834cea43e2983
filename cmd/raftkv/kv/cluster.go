package kv

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/raftkit/raft"
)

// ParseCluster parses the --raft_cluster syntax, "id/host:port,id/host:port,...", into
// voters. Every ID and address must be present and unique, and every port numeric.
func ParseCluster(s string) ([]raft.Server, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty cluster")
	}
	var servers []raft.Server
	ids := make(map[string]bool)
	addrs := make(map[string]bool)
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		id, addr, ok := strings.Cut(entry, "/")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("cluster entry %q is not id/host:port", entry)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("cluster entry %q: %v", entry, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 || host == "" {
			return nil, fmt.Errorf("cluster entry %q: want host:port with a port in 1-65535", entry)
		}
		if ids[id] {
			return nil, fmt.Errorf("duplicate id %s in cluster", id)
		}
		if addrs[addr] {
			return nil, fmt.Errorf("duplicate address %s in cluster", addr)
		}
		ids[id], addrs[addr] = true, true
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	return servers, nil
}
