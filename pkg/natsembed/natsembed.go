// Package natsembed starts a NATS server with JetStream inside the process:
// the one-machine default and what tests run against.
package natsembed

import (
	"fmt"
	"net"
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
}

// Start runs a server and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "nixbus",
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("nats listen port %q: %w", port, err)
		}
		if p == 0 {
			p = -1
		}
		opts.Host, opts.Port = host, p
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
