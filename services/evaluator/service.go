// Package evaluator turns change events into runs: it finds the change's
// flake (a local checkout, or one a Fetcher makes), evaluates its hydraJobs
// with nix-eval-jobs or the built-in evaluator, and publishes RunStarted,
// one Job per attribute (with the jobs it depends on) and EvalDone.
package evaluator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/nix"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Fetcher makes a checkout of the change an event names.
type Fetcher interface {
	// Fetch checks out ev's revision in workDir (an existing empty
	// directory the evaluator removes afterwards) and returns the
	// directory holding flake.nix.
	Fetch(ctx context.Context, ev *nixbuspb.ChangeEvent, workDir string) (flakeDir string, err error)
}

// Deps are the evaluator's collaborators.
type Deps struct {
	JS         jetstream.JetStream
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Nix runs nix; nil: nix from PATH with no options.
	Nix *nix.Nix
	// Fetcher fetches changes that are not local checkouts; nil: such
	// changes fail with an error saying so.
	Fetcher Fetcher
	// TracerProvider gets a span per evaluation (with fetch, eval and
	// publish spans under it); nil: no spans.
	TracerProvider trace.TracerProvider
}

// Service is a running evaluator.
type Service struct {
	cfg    Config
	js     jetstream.JetStream
	logger *slog.Logger
	nix    *nix.Nix
	// evalNix is nix with MaxMemoryMB applied, for the built-in evaluator.
	evalNix *nix.Nix
	fetcher Fetcher
	pub     *bus.Publisher
	tracer  trace.Tracer
	metrics *metrics
	cache   *cacheCheck // nil: nix path-info asks the cache
}

// New checks cfg and returns an evaluator.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Logger == nil {
		return nil, errors.New("evaluator: JS and Logger are required")
	}
	if d.Registerer == nil {
		d.Registerer = prometheus.NewRegistry()
	}
	if d.Nix == nil {
		d.Nix = &nix.Nix{}
	}
	logger := d.Logger.With("service", "evaluator")
	cache, err := newCacheCheck(cfg, d.Registerer, logger)
	if err != nil {
		return nil, fmt.Errorf("evaluator: %w", err)
	}
	return &Service{
		cfg: cfg, js: d.JS, logger: logger, nix: d.Nix, fetcher: d.Fetcher,
		evalNix: &nix.Nix{Bin: d.Nix.Bin, Options: d.Nix.Options, Env: d.Nix.Env, MaxMemoryMB: cfg.MaxMemoryMB},
		pub:     bus.NewPublisher(d.JS, logger), tracer: bus.Tracer(d.TracerProvider, "nixbus.dev/nixbus/services/evaluator"),
		metrics: newMetrics(d.Registerer, d.JS), cache: cache,
	}, nil
}

// Run evaluates change events until ctx ends. Every process shares one
// durable consumer, so a second evaluator takes the next change.
func (s *Service) Run(ctx context.Context) error {
	defer s.cache.close()
	if err := bus.EnsureStreams(ctx, s.js, bus.StreamOptions{}); err != nil {
		return fmt.Errorf("evaluator: %w", err)
	}
	runs, err := s.js.Stream(ctx, bus.StreamRuns)
	if err != nil {
		return fmt.Errorf("evaluator: open %s: %w", bus.StreamRuns, err)
	}
	h := &handler{s: s, runs: runs}
	return bus.Work(ctx, s.js, bus.WorkOptions{
		Stream: bus.StreamChanges, Durable: Consumer, Filter: bus.ChangeAll,
		Concurrency: s.cfg.Concurrency, AckWait: s.cfg.AckWait, RetryDelay: s.cfg.RetryDelay,
		Tracer: s.tracer, SpanName: "evaluate",
	}, s.logger, h.handle)
}
