// Package natstest starts a real JetStream server for tests: a random
// loopback port, a store in the test's temp dir, shut down at cleanup.
package natstest

import (
	"net"
	"strconv"
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
	port     int
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
	ns, err := natsembed.Start(natsembed.Options{StoreDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	addr, ok := ns.Addr().(*net.TCPAddr)
	if !ok {
		ns.Shutdown()
		t.Fatalf("nats listens on %v, not TCP", ns.Addr())
	}
	s := &Server{Server: ns, URL: ns.ClientURL(), StoreDir: dir, port: addr.Port}
	// The server running at cleanup, which StartAgain may have replaced.
	t.Cleanup(s.Stop)
	return s
}

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
	ns, err := natsembed.Start(natsembed.Options{StoreDir: s.StoreDir, Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))})
	if err != nil {
		t.Fatalf("start nats again on port %d: %v", s.port, err)
	}
	s.Server = ns
}

// Connect opens a client connection closed at cleanup, and a JetStream handle.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
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

// Read returns every message stream holds on subject, in order, decoded
// as T: what a test asserts a service published.
func Read[T any, P interface {
	*T
	proto.Message
}](t testing.TB, js jetstream.JetStream, stream, subject string) []P {
	t.Helper()
	ctx := t.Context()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("read %s: %v", subject, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatalf("read %s: %v", subject, err)
	}
	n := int(info.State.Subjects[subject])
	out := make([]P, 0, n)
	if n == 0 {
		return out
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatalf("read %s: %v", subject, err)
	}
	for len(out) < n {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read %s: %d of %d messages: %v", subject, len(out), n, err)
		}
		p := P(new(T))
		if err := bus.Decode(msg.Data(), p); err != nil {
			t.Fatalf("read %s: %v", subject, err)
		}
		out = append(out, p)
	}
	return out
}
