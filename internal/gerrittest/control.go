package gerrittest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Push appends events to the stream every session delivers.
func (s *Server) Push(events ...Event) {
	lines := make([]string, len(events))
	for i, e := range events {
		lines[i] = e.JSON()
	}
	s.PushRaw(lines...)
}

// PushRaw appends raw lines (one JSON event each, or garbage) to the stream.
func (s *Server) PushRaw(lines ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range lines {
		s.events = append(s.events, pushed{line: strings.TrimRight(l, "\n"), typ: eventType(l)})
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Delivered is how many pushed events some session has written out.
func (s *Server) Delivered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delivered
}

// StreamsStarted counts stream-events sessions so far; ActiveStreams those
// still running.
func (s *Server) StreamsStarted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streamsStarted
}

// ActiveStreams counts running stream-events sessions.
func (s *Server) ActiveStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streamsActive
}

// WaitStreams waits until n stream sessions have started and one runs.
func (s *Server) WaitStreams(t testing.TB, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d stream-events sessions", n), func() bool {
		return s.StreamsStarted() >= n && s.ActiveStreams() > 0
	})
}

// DropConnections closes every SSH connection at once, mid-stream.
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.sc.Close()
	}
}

// DropNextMidLine makes the next event a session writes stop halfway,
// and then closes that session's connection.
func (s *Server) DropNextMidLine() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropMid = true
}

// Connections counts open SSH connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// WaitConnections waits until n SSH connections are open (a client's
// handshake may finish before the server has registered it).
func (s *Server) WaitConnections(t testing.TB, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d connections", n), func() bool { return s.Connections() >= n })
}

// StallKeepalives makes the current connections stop answering keepalives,
// like a server behind a dead network path that the client must notice.
func (s *Server) StallKeepalives() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		c.stalled = true
		c.mu.Unlock()
	}
}

// FailReviews makes the next n `gerrit review` commands fail with exit 1.
func (s *Server) FailReviews(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failReviews = n
}

// LoseReviewAnswers makes the next n `gerrit review` commands take effect
// and then drop the connection before the exit status is sent.
func (s *Server) LoseReviewAnswers(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loseAnswers = n
}

// Reviews returns the `gerrit review` commands that succeeded, in order.
func (s *Server) Reviews() []ReviewCommand {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ReviewCommand(nil), s.reviews...)
}

// WaitReviews waits until n reviews were recorded and returns them.
func (s *Server) WaitReviews(t testing.TB, n int) []ReviewCommand {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d reviews", n), func() bool { return len(s.Reviews()) >= n })
	return s.Reviews()
}

// Commands returns every command line received, in order.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// AuthFailures counts refused logins.
func (s *Server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFailures
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gerrittest: timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
