// Package natstest starts a real JetStream server for tests: a random
// loopback port, a store in the test's temp dir, shut down at cleanup.
package natstest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natsembed"
)

// Server is a running test server.
type Server struct {
	*server.Server
	URL      string
	StoreDir string
	opts     natsembed.Options
	log      *errorLog
}

// Start runs a JetStream server on 127.0.0.1 and a random port.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartDir(t, t.TempDir())
}

// StartDir runs a server on an existing store dir, so a test can restart
// NATS on the same state.
func StartDir(t testing.TB, dir string) *Server {
	t.Helper()
	return StartOptions(t, natsembed.Options{StoreDir: dir})
}

// StartConfig runs a server from a nats-server configuration file, such
// as one that includes the authorization `nixbus nats-config` writes.
func StartConfig(t testing.TB, path string) *Server {
	t.Helper()
	return StartOptions(t, natsembed.Options{StoreDir: t.TempDir(), ConfigFile: path})
}

// StartOptions runs a server with o on 127.0.0.1 and a random port (unless
// o.Listen names one).
func StartOptions(t testing.TB, o natsembed.Options) *Server {
	t.Helper()
	s, err := start(o)
	if err != nil {
		t.Fatal(err)
	}
	// The server running at cleanup, which StartAgain may have replaced.
	t.Cleanup(s.Stop)
	return s
}

func start(o natsembed.Options) (*Server, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	ns, err := natsembed.Start(o)
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	addr, ok := ns.Addr().(*net.TCPAddr)
	if !ok {
		ns.Shutdown()
		return nil, fmt.Errorf("nats listens on %v, not TCP", ns.Addr())
	}
	// Started again, it listens where its clients look for it.
	o.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(addr.Port))
	s := &Server{Server: ns, URL: ns.ClientURL(), StoreDir: o.StoreDir, opts: o, log: &errorLog{}}
	ns.SetLogger(s.log, false, false)
	return s, nil
}

// Errors returns the errors the server logged, in order, such as
// "Publish Violation" for a client publishing where its user may not.
func (s *Server) Errors() []string {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	return slices.Clone(s.log.errors)
}

// errorLog keeps a server's errors for Errors.
type errorLog struct {
	mu     sync.Mutex
	errors []string
}

func (l *errorLog) Errorf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errors = append(l.errors, fmt.Sprintf(format, v...))
}
func (*errorLog) Noticef(string, ...any) {}
func (*errorLog) Warnf(string, ...any)   {}
func (*errorLog) Fatalf(string, ...any)  {}
func (*errorLog) Debugf(string, ...any)  {}
func (*errorLog) Tracef(string, ...any)  {}

// Stop shuts the server down, like an outage: clients keep trying to
// reconnect to URL until StartAgain.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// StartAgain starts a stopped server again on the same port and store
// dir, so clients reconnect to the JetStream state they left.
func (s *Server) StartAgain(t testing.TB) {
	t.Helper()
	ns, err := natsembed.Start(s.opts)
	if err != nil {
		t.Fatalf("start nats again on %s: %v", s.opts.Listen, err)
	}
	ns.SetLogger(s.log, false, false)
	s.Server = ns
}

// Connect opens a client connection closed at cleanup, and a JetStream
// handle; opts add to the defaults (credentials, for one).
func (s *Server) Connect(t testing.TB, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("connect nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// LeakOptions are the goleak options for packages whose tests use NATS:
// nats.go starts a goroutine for its first async publish that waits on a
// channel which, when the connection closes at the wrong moment, is nil,
// so it never ends. It is the client library's, not ours.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	}
}

// Stored counts the messages stream holds on subject; it fails no test,
// so a require.Eventually condition may call it.
func Stored(ctx context.Context, js jetstream.JetStream, stream, subject string) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	return int(info.State.Subjects[subject]), nil
}

// Read returns every message stream holds on subject, in order, decoded
// as T: what a test asserts a service published.
func Read[T any, P interface {
	*T
	proto.Message
}](t testing.TB, js jetstream.JetStream, stream, subject string) []P {
	t.Helper()
	out, err := TryRead[T, P](t.Context(), js, stream, subject)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryRead is Read for a require.Eventually condition, which must not fail
// the test: it returns the error instead. It reads as the services do
// (bus.ReadOrdered: its fetches ride out a cluster's leader changes, where the
// ordered consumer's Next met no responders).
func TryRead[T any, P interface {
	*T
	proto.Message
}](ctx context.Context, js jetstream.JetStream, stream, subject string) ([]P, error) {
	var out []P
	_, err := bus.ReadOrdered(ctx, js, stream, []string{subject}, 0, func(msg jetstream.Msg) error {
		p := P(new(T))
		if err := bus.Decode(msg.Data(), p); err != nil {
			return fmt.Errorf("read %s: %w", subject, err)
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %d messages, then: %w", subject, len(out), err)
	}
	return out, nil
}
