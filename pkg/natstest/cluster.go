package natstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"nixbus.dev/nixbus/pkg/natsembed"
)

// Cluster is a JetStream cluster of embedded servers routed over
// loopback, each with its own store, shut down at cleanup.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts n clustered JetStream servers named n1, n2, … on
// 127.0.0.1 and waits until they elected a meta leader and all of them
// are current. configFile, when not empty, is each server's nats-server
// configuration (authorization, for one); its listen addresses, routes
// and store are replaced by the test's.
func StartCluster(t testing.TB, n int, configFile string) *Cluster {
	t.Helper()
	// Every node routes to all: the route ports are picked first. A
	// clustered node is not ready until it meets the others, so all start
	// at once.
	var routes []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a route port: %v", err)
		}
		routes = append(routes, "nats-route://"+ln.Addr().String())
		if err := ln.Close(); err != nil {
			t.Fatalf("pick a route port: %v", err)
		}
	}
	c := &Cluster{Nodes: make([]*Server, n)}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		o := natsembed.Options{
			StoreDir: t.TempDir(), ConfigFile: configFile, ServerName: fmt.Sprintf("n%d", i+1),
			Cluster: natsembed.Cluster{Name: "nixbus-test", Listen: strings.TrimPrefix(routes[i], "nats-route://"), Routes: routes},
		}
		wg.Go(func() { c.Nodes[i], errs[i] = start(o) })
	}
	wg.Wait()
	for i, s := range c.Nodes {
		if s != nil {
			t.Cleanup(s.Stop)
		}
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i+1, errs[i])
		}
	}
	deadline := time.Now().Add(time.Minute)
	for !c.ready() {
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster of %d not ready after a minute", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

func (c *Cluster) ready() bool {
	leader := false
	for _, s := range c.Nodes {
		if !s.JetStreamIsCurrent() {
			return false
		}
		// Only the meta leader lists the peers.
		if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == len(c.Nodes) {
			leader = true
		}
	}
	return leader
}

// URLs lists every node's client URL, for clients that may use any.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		urls[i] = s.URL
	}
	return strings.Join(urls, ",")
}

// Node returns the node called name (a stream's Cluster.Leader), or nil.
func (c *Cluster) Node(name string) *Server {
	for _, s := range c.Nodes {
		if s.Name() == name {
			return s
		}
	}
	return nil
}
