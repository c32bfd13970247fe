// Package natsembed starts a NATS server with JetStream inside the process:
// the one-machine default and what tests run against.
package natsembed

import (
	"cmp"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options for the embedded server.
type Options struct {
	// StoreDir holds JetStream's files; it survives restarts.
	StoreDir string
	// Listen is host:port to accept outside clients on; empty means no
	// listener (clients connect in-process); port 0 or -1 picks a free port.
	Listen string
	// ReadyTimeout bounds start-up.
	ReadyTimeout time.Duration
	// ConfigFile is a nats-server configuration (authorization, TLS,
	// cluster) to start from; StoreDir, Listen and the fields below
	// override what it says.
	ConfigFile string
	// ServerName names the server (default "nixbus"); each node of a
	// cluster needs its own.
	ServerName string
	// Cluster, when Cluster.Listen is set, joins a JetStream cluster.
	Cluster Cluster
}

// Cluster is how a server meets the other nodes of its cluster.
type Cluster struct {
	// Name of the cluster, the same on every node.
	Name string
	// Listen is host:port for routes from the other nodes.
	Listen string
	// Routes are the other nodes' route URLs (nats-route://host:port).
	Routes []string
}

// Start runs a server and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	opts := &server.Options{}
	if o.ConfigFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(o.ConfigFile); err != nil {
			return nil, fmt.Errorf("nats config %s: %w", o.ConfigFile, err)
		}
	}
	opts.ServerName = cmp.Or(o.ServerName, opts.ServerName, "nixbus")
	opts.JetStream = true
	opts.StoreDir = o.StoreDir
	opts.NoSigs = true
	opts.NoLog = true
	if opts.MaxPayload == 0 {
		opts.MaxPayload = 8 << 20
	}
	if o.Cluster.Listen != "" {
		host, port, err := splitHostPort(o.Cluster.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats cluster listen address: %w", err)
		}
		opts.Cluster.Name, opts.Cluster.Host, opts.Cluster.Port = o.Cluster.Name, host, port
		opts.Routes = nil
		for _, r := range o.Cluster.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("nats route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address: %w", err)
		}
		opts.Host, opts.Port = host, port
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new nats server: %w", err)
	}
	go ns.Start()
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if !ns.ReadyForConnections(o.ReadyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server not ready after %s", o.ReadyTimeout)
	}
	return ns, nil
}

// splitHostPort parses host:port; port 0 becomes -1, a free port.
func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", port, err)
	}
	if p == 0 {
		p = -1
	}
	return host, p, nil
}
