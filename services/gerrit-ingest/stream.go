package gerritingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/changeevent"
	"nixbus.dev/nixbus/pkg/gerrit"
	"nixbus.dev/nixbus/pkg/prom"
)

// streamCommand subscribes to the events nixbus acts on; Gerrit sends
// dropped-output whatever the subscription.
var streamCommand = "gerrit stream-events " + strings.Join([]string{
	"-s patchset-created", "-s change-restored", "-s comment-added", "-s change-merged", "-s ref-updated",
}, " ")

var errLineTooLong = errors.New("event line too long")

// follow runs one stream-events session until it ends, and returns how
// many events it handled and why it ended.
func (s *Service) follow(ctx context.Context) (int, error) {
	c, err := gerrit.Dial(ctx, s.ssh)
	if err != nil {
		s.metrics.connects.WithLabelValues("error").Inc()
		return 0, err
	}
	defer func() {
		if err := c.Close(); err != nil {
			s.logger.Debug("close gerrit connection", "err", err)
		}
	}()
	st, err := c.Stream(streamCommand)
	if err != nil {
		s.metrics.connects.WithLabelValues("error").Inc()
		return 0, err
	}
	// Ending ctx ends the session, which ends the read below.
	stop := context.AfterFunc(ctx, func() { _ = st.Close() })
	defer stop()
	defer func() { _ = st.Close() }()
	s.metrics.connects.WithLabelValues("ok").Inc()
	s.metrics.connected.Set(1)
	defer s.metrics.connected.Set(0)
	s.logger.Info("gerrit stream connected", "address", s.ssh.Address)

	r := bufio.NewReaderSize(st, 64<<10)
	handled := 0
	for {
		line, err := readLine(r, s.cfg.MaxLineBytes)
		if errors.Is(err, errLineTooLong) {
			s.metrics.malformed.Inc()
			s.logger.Warn("malformed gerrit event", "err", err, "limit", s.cfg.MaxLineBytes)
			continue
		}
		if err != nil {
			if len(bytes.TrimSpace(line)) > 0 {
				// The connection died mid-line: that event is not
				// lost, Gerrit (or the next session) sends it whole.
				s.metrics.malformed.Inc()
				s.logger.Warn("gerrit stream cut mid-event", "bytes", len(line))
			}
			break
		}
		if err := s.handleLine(ctx, line); err != nil {
			return handled, err
		}
		handled++
	}
	if ctx.Err() != nil {
		return handled, ctx.Err()
	}
	if kerr := c.Err(); kerr != nil {
		return handled, kerr
	}
	if werr := st.Wait(); werr != nil {
		return handled, werr
	}
	return handled, io.EOF
}

// readLine reads one line of at most limit bytes. A longer line is read to
// its end and reported as errLineTooLong. At the end of the stream it
// returns what it has with the read error.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > limit+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			return line, err
		case tooLong:
			return nil, errLineTooLong
		}
		return line, nil
	}
}

// handleLine publishes the change event a line calls for. It fails only
// when ctx ends before the event is stored.
func (s *Service) handleLine(ctx context.Context, line []byte) error {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil
	}
	ev, err := DecodeEvent(line)
	if err != nil {
		s.metrics.malformed.Inc()
		s.logger.Warn("malformed gerrit event", "err", err, "line", excerpt(line))
		return nil
	}
	s.metrics.events.WithLabelValues(typeLabel(ev.Type)).Inc()
	if ev.Type == "dropped-output" {
		s.metrics.dropped.Inc()
		s.logger.Error("gerrit dropped stream output: events were lost, comment recheck on changes uploaded meanwhile")
		return nil
	}
	ce, reason := s.norm.normalize(ev)
	if ce == nil {
		s.metrics.ignored.WithLabelValues(reason).Inc()
		s.logger.Debug("gerrit event ignored", "type", ev.Type, "reason", reason, "change", ev.Change, "patchset", ev.Patchset)
		return nil
	}
	if s.seen.has(ce.EventId) {
		s.metrics.duplicates.Inc()
		s.logger.Debug("gerrit event seen before", "event", ce.EventId, "change", ce.Change, "patchset", ce.Patchset)
		return nil
	}
	subject := bus.ChangeSubject(ce.Project)
	// The root of the run's trace: everything the event causes is its
	// descendant, down to the vote.
	ctx, span := s.tracer.Start(ctx, "change event", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(changeevent.Attrs(ce, attribute.String("gerrit.event.type", ev.Type))...))
	err = s.pub.Publish(ctx, subject, bus.MsgIDChange(ce.EventId), ce, nil)
	bus.EndSpan(span, err)
	if err != nil {
		return fmt.Errorf("publish change event: %w", err)
	}
	s.seen.add(ce.EventId)
	s.metrics.published.WithLabelValues(prom.EnumLabel(ce.Kind)).Inc()
	s.logger.Info("change event published", "event", ce.EventId, "kind", ce.Kind.String(), "change", ce.Change,
		"patchset", ce.Patchset, "ref", ce.Ref, "subject", subject)
	return nil
}

func excerpt(b []byte) string {
	const limit = 200
	if len(b) > limit {
		return strings.ToValidUTF8(string(b[:limit]), "\uFFFD") + "…"
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// recent remembers the last n ids, so that events a reconnect repeats are
// not even sent to JetStream (which would drop them too).
type recent struct {
	mu   sync.Mutex
	ids  map[string]bool
	ring []string
	next int
}

func newRecent(n int) *recent { return &recent{ids: map[string]bool{}, ring: make([]string, n)} }

func (r *recent) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

func (r *recent) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids[id] {
		return
	}
	delete(r.ids, r.ring[r.next])
	r.ring[r.next] = id
	r.ids[id] = true
	r.next = (r.next + 1) % len(r.ring)
}
