// Package gerritingest follows Gerrit's event stream (`gerrit stream-events`
// over SSH) and publishes a change event for each thing nixbus should
// evaluate: a new patchset, a restored change, a recheck comment, a branch
// update after a merge. Events get ids derived from their content, so a
// reconnect that sees an event again publishes nothing twice.
package gerritingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/gerrit"
	"nixbus.dev/nixbus/pkg/retry"
)

// Deps are gerrit-ingest's collaborators.
type Deps struct {
	JS         jetstream.JetStream
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// SSH reaches Gerrit; the zero value (no address) leaves the service
	// idle, which is what a machine without Gerrit wants.
	SSH gerrit.SSHConfig
	// TracerProvider gets the root span of each change event's trace;
	// nil: no spans, at no cost.
	TracerProvider trace.TracerProvider
}

// tracerName names gerrit-ingest's spans' instrumentation scope.
const tracerName = "nixbus.dev/nixbus/services/gerrit-ingest"

// Service is a running gerrit-ingest.
type Service struct {
	cfg     Config
	ssh     gerrit.SSHConfig
	js      jetstream.JetStream
	logger  *slog.Logger
	pub     *bus.Publisher
	tracer  trace.Tracer
	metrics *metrics
	norm    *normalizer
	seen    *recent
}

// New checks cfg and returns a gerrit-ingest.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := d.SSH.Validate(); err != nil {
		return nil, fmt.Errorf("gerrit-ingest: %w", err)
	}
	if d.JS == nil || d.Logger == nil {
		return nil, errors.New("gerrit-ingest: JS and Logger are required")
	}
	if d.Registerer == nil {
		d.Registerer = prometheus.NewRegistry()
	}
	cfg = cfg.withDefaults()
	logger := d.Logger.With("service", "gerrit-ingest")
	s := &Service{
		cfg: cfg, ssh: d.SSH, js: d.JS, logger: logger,
		pub: bus.NewPublisher(d.JS, logger), tracer: bus.Tracer(d.TracerProvider, tracerName),
		metrics: newMetrics(d.Registerer), seen: newRecent(4096),
	}
	s.norm = newNormalizer(cfg, d.SSH.User, s.repoURL)
	return s, nil
}

// repoURL is where the evaluator fetches project from.
func (s *Service) repoURL(project string) string {
	if s.cfg.FetchURL != "" {
		return strings.TrimRight(s.cfg.FetchURL, "/") + "/" + strings.TrimLeft(project, "/")
	}
	return s.ssh.RepoURL(project)
}

// Run follows Gerrit's events until ctx ends, reconnecting with backoff.
func (s *Service) Run(ctx context.Context) error {
	if err := bus.EnsureStreams(ctx, s.js, bus.StreamOptions{}); err != nil {
		return fmt.Errorf("gerrit-ingest: %w", err)
	}
	if !s.ssh.Enabled() {
		s.logger.Info("no gerrit configured, idle")
		<-ctx.Done()
		return nil
	}
	backoff := retry.Backoff{Min: s.cfg.ReconnectMin, Max: s.cfg.ReconnectMax}
	for ctx.Err() == nil {
		started := time.Now()
		handled, err := s.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		// A connection that worked for a while starts the backoff over.
		if handled > 0 || time.Since(started) > s.cfg.ReconnectMax {
			backoff.Reset()
		}
		wait := backoff.Next()
		s.logger.Warn("gerrit stream ended, reconnecting", "err", err, "retry_in", wait)
		_ = retry.Sleep(ctx, wait)
	}
	return nil
}
