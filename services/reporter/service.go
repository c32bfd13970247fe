// Package reporter turns run verdicts into the review a Gerrit change gets:
// Verified +1/-1 and a message listing each failed job with a link to its log.
package reporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Post is one review to give.
type Post struct {
	Change   *nixbuspb.ChangeEvent
	RunID    string
	Verified int
	Message  string
	Tag      string
	// NoVote posts the message and leaves the Verified label alone.
	NoVote bool
	// Marker identifies this review on the change (one line, added to the
	// message by the poster), so that a post whose outcome is unknown is
	// looked for rather than given twice.
	Marker string
	// MaybePosted says an earlier attempt, perhaps by a reporter that died,
	// may have been applied: the poster looks for Marker first.
	MaybePosted bool
}

// Poster gives a review on a Gerrit change (over SSH or REST).
type Poster interface {
	Post(ctx context.Context, p Post) error
}

// Deps are the reporter's collaborators.
type Deps struct {
	JS         jetstream.JetStream
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Gerrit posts reviews of Gerrit patchsets; nil prints them instead.
	Gerrit Poster
	// Out receives reviews that are printed rather than posted (manual
	// runs, post-merge runs, or no Gerrit configured). Nil: discarded.
	Out io.Writer
	// TracerProvider gets a span per verdict reported; nil: no spans.
	TracerProvider trace.TracerProvider
}

// Service is a running reporter.
type Service struct {
	cfg     Config
	js      jetstream.JetStream
	logger  *slog.Logger
	gerrit  Poster
	out     io.Writer
	pub     *bus.Publisher
	tracer  trace.Tracer
	metrics *metrics
	// made is when New ran: where new durable consumers start.
	made time.Time
}

// New checks cfg and returns a reporter.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Logger == nil {
		return nil, errors.New("reporter: JS and Logger are required")
	}
	if d.Registerer == nil {
		d.Registerer = prometheus.NewRegistry()
	}
	if d.Out == nil {
		d.Out = io.Discard
	}
	logger := d.Logger.With("service", "reporter")
	return &Service{
		cfg: cfg, js: d.JS, logger: logger, gerrit: d.Gerrit, out: d.Out,
		pub: bus.NewPublisher(d.JS, logger), tracer: bus.Tracer(d.TracerProvider, "nixbus.dev/nixbus/services/reporter"),
		metrics: newMetrics(d.Registerer), made: time.Now(),
	}, nil
}

// Durables are the durable consumers Run works through: the verdicts'
// and, when it posts "build started" messages, the runs' starts.
func (s *Service) Durables() []bus.Durable {
	out := []bus.Durable{{Stream: bus.StreamReports, Name: Consumer}}
	if s.postsStarted() {
		out = append(out, bus.Durable{Stream: bus.StreamRuns, Name: ConsumerStarted})
	}
	return out
}

// postsStarted: "build started" messages are asked for, and there is a
// Gerrit to post them to.
func (s *Service) postsStarted() bool { return s.cfg.StartedMessage && s.gerrit != nil }

// Run reports verdicts until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := bus.EnsureStreams(ctx, s.js, bus.StreamOptions{}, votesBucket); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("reporter: %w", err)
	}
	votes, err := s.js.KeyValue(ctx, VotesBucket)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("reporter: open %s: %w", VotesBucket, err)
	}
	h := &handler{s: s, votes: votes}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return bus.Work(gctx, s.js, bus.WorkOptions{
			Stream: bus.StreamReports, Durable: Consumer, Filter: bus.VerdictAll,
			// Reviews wait for their runs' uploads: many at once.
			Concurrency: 16, AckWait: s.cfg.AckWait, RetryDelay: s.cfg.RetryDelay, StartTime: s.made,
			Tracer: s.tracer, SpanName: "report",
		}, s.logger, h.handle)
	})
	if s.postsStarted() {
		g.Go(func() error {
			return bus.Work(gctx, s.js, bus.WorkOptions{
				Stream: bus.StreamRuns, Durable: ConsumerStarted, Filter: bus.RunStarts,
				Concurrency: 2, AckWait: s.cfg.AckWait, RetryDelay: s.cfg.RetryDelay, StartTime: s.made,
				Tracer: s.tracer, SpanName: "report start",
			}, s.logger, h.started)
		})
	}
	return g.Wait()
}
