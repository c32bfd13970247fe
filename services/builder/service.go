// Package builder builds derivations released on nix.build.<system>. Every
// builder process of a system binds to one durable consumer, so adding
// processes adds capacity; a build that dies with its process is handed to
// another builder by JetStream.
package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/nix"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/builder/internal/nixbuild"
)

// Deps are the builder's collaborators.
type Deps struct {
	JS         jetstream.JetStream
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Nix runs nix; required unless Config.Instant.
	Nix *nix.Nix
	// TracerProvider gets a span per build; nil: no spans.
	TracerProvider trace.TracerProvider
}

// Service is a running builder.
type Service struct {
	cfg     Config
	js      jetstream.JetStream
	logger  *slog.Logger
	exec    nixbuild.Executor
	pub     *bus.Publisher
	tracer  trace.Tracer
	metrics *metrics
	cancels *cancels
}

// New checks cfg and returns a builder.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Logger == nil {
		return nil, errors.New("builder: JS and Logger are required")
	}
	if d.Nix == nil && !cfg.Instant {
		return nil, errors.New("builder: Nix is required unless builder.instant is set")
	}
	if d.Registerer == nil {
		d.Registerer = prometheus.NewRegistry()
	}
	if cfg.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("builder: host name: %w", err)
		}
		cfg.Name = host
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = filepath.Join(os.TempDir(), "nixbus-builder")
	}
	dir, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("builder: work dir: %w", err)
	}
	cfg.WorkDir = dir
	var exec nixbuild.Executor = nixbuild.Instant{}
	if !cfg.Instant {
		exec = &nixbuild.Daemon{Nix: d.Nix, MaxSilentTime: cfg.MaxSilentTime, RemoteOnly: cfg.RemoteOnly, KillGrace: cfg.KillGrace, HookDir: cfg.WorkDir}
		if cfg.NixCLI {
			exec = &nixbuild.Nix{Nix: d.Nix, MaxSilentTime: cfg.MaxSilentTime, RemoteOnly: cfg.RemoteOnly, KillGrace: cfg.KillGrace}
		}
	}
	logger := d.Logger.With("service", "builder")
	return &Service{
		cfg: cfg, js: d.JS, logger: logger, exec: exec,
		pub: bus.NewPublisher(d.JS, logger), tracer: bus.Tracer(d.TracerProvider, "nixbus.dev/nixbus/services/builder"),
		metrics: newMetrics(d.Registerer, cfg.System), cancels: newCancels(time.Hour),
	}, nil
}

// Run builds requests for the configured system until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := bus.EnsureStreams(ctx, s.js, bus.StreamOptions{}); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	if err := os.MkdirAll(s.cfg.WorkDir, 0o755); err != nil {
		return fmt.Errorf("builder: create work dir: %w", err)
	}
	if c, ok := s.exec.(interface{ Check(context.Context) error }); ok {
		if err := c.Check(ctx); err != nil {
			return fmt.Errorf("builder: %w (--builder.nix-cli builds without nix-daemon)", err)
		}
	}
	logs, err := s.js.ObjectStore(ctx, bus.LogBucket)
	if err != nil {
		return fmt.Errorf("builder: open %s: %w", bus.LogBucket, err)
	}
	runs, err := s.js.Stream(ctx, bus.StreamRuns)
	if err != nil {
		return fmt.Errorf("builder: open %s: %w", bus.StreamRuns, err)
	}
	// Cancellations reach running builds over plain NATS: no state to
	// keep, and a builder that misses one checks the stream before its
	// next build anyway.
	sub, err := s.js.Conn().Subscribe(bus.RunCancels, s.onCancel)
	if err != nil {
		return fmt.Errorf("builder: subscribe %s: %w", bus.RunCancels, err)
	}
	defer func() {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			s.logger.Warn("unsubscribe", "subject", bus.RunCancels, "err", err)
		}
	}()
	if c, ok := s.exec.(io.Closer); ok {
		defer func() {
			if err := c.Close(); err != nil {
				s.logger.Warn("close nix connections", "err", err)
			}
		}()
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.pruneLoop(ctx) })
	wg.Go(func() { s.heartbeatLoop(ctx) })
	defer wg.Wait()
	s.logger.Info("builder started", "system", s.cfg.System, "builder", s.cfg.Name, "concurrency", s.cfg.Concurrency, "instant", s.cfg.Instant)
	h := &handler{s: s, logs: logs, runs: runs, cancelSub: sub}
	return bus.Work(ctx, s.js, bus.WorkOptions{
		Stream: bus.StreamBuilds, Durable: bus.ConsumerBuilder(s.cfg.System), Filter: bus.BuildSubject(s.cfg.System),
		Concurrency: s.cfg.Concurrency, AckWait: s.cfg.AckWait, RetryDelay: s.cfg.RetryDelay,
		Tracer: s.tracer, SpanName: "build",
	}, s.logger, h.handle)
}

func (s *Service) onCancel(m *nats.Msg) {
	run, _, err := bus.ParseRunSubject(m.Subject)
	if err != nil {
		return
	}
	if n := s.cancels.cancel(run, time.Now()); n > 0 {
		s.logger.Info("cancelling builds", "run", run, "builds", n)
	}
}

// heartbeatLoop announces this builder on nixbus.builder.<system> now and
// every HeartbeatInterval, over core NATS: a lost one only matters if
// every one is lost for --planner.no-builder-timeout.
func (s *Service) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	subject := bus.BuilderSubject(s.cfg.System)
	for {
		data, err := bus.Encode(&nixbuspb.BuilderAlive{System: s.cfg.System, Builder: s.cfg.Name, SentUnixMs: time.Now().UnixMilli(), IntervalMs: s.cfg.HeartbeatInterval.Milliseconds()})
		if err == nil {
			err = s.js.Conn().Publish(subject, data)
		}
		if err != nil && ctx.Err() == nil {
			s.logger.Warn("announce builder", "subject", subject, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneLoop removes run directories (and so the out-links, which are GC
// roots) older than OutLinkTTL.
func (s *Service) pruneLoop(ctx context.Context) {
	if s.cfg.OutLinkTTL == 0 {
		return
	}
	t := time.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		if err := prune(s.cfg.WorkDir, time.Now().Add(-s.cfg.OutLinkTTL)); err != nil {
			s.logger.Warn("prune out-links", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func prune(dir string, before time.Time) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(before) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
