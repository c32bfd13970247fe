// Package cacheuploader signs the outputs of successful builds and copies
// them to the binary cache, one upload result per build. The outputs of
// post-merge builds of the default branch also get gc roots and links in
// an outputs directory, as buildbot-nix gives them.
package cacheuploader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/binarycache"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/nix"
)

// Deps are the cache-uploader's collaborators.
type Deps struct {
	JS         jetstream.JetStream
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Nix        *nix.Nix
	// TracerProvider gets a span per upload; nil: no spans.
	TracerProvider trace.TracerProvider
}

// Service is a running cache-uploader.
type Service struct {
	cfg       Config
	js        jetstream.JetStream
	logger    *slog.Logger
	nix       *nix.Nix
	pub       *bus.Publisher
	tracer    trace.Tracer
	metrics   *metrics
	publicKey string
	links     *linker
	sink      sink
	closeSink func()
	// made is when New ran: where new durable consumers start.
	made time.Time
}

// New checks cfg, creates the signing key if asked to, and returns a
// cache-uploader.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Logger == nil || d.Nix == nil {
		return nil, errors.New("cache-uploader: JS, Logger and Nix are required")
	}
	if d.Registerer == nil {
		d.Registerer = prometheus.NewRegistry()
	}
	logger := d.Logger.With("service", "cache-uploader")
	if _, err := os.Stat(cfg.SecretKeyFile); errors.Is(err, os.ErrNotExist) && cfg.GenerateKey {
		if err := generateKey(d.Nix, cfg.KeyName, cfg.SecretKeyFile); err != nil {
			return nil, fmt.Errorf("cache-uploader: %w", err)
		}
		logger.Info("signing key generated", "file", cfg.SecretKeyFile)
	}
	pub, err := publicKey(cfg.SecretKeyFile)
	if err != nil {
		return nil, fmt.Errorf("cache-uploader: %w", err)
	}
	logger.Info("signing outputs", "public_key", pub, "cache", cfg.CacheURL)
	s := &Service{
		cfg: cfg, js: d.JS, logger: logger, nix: d.Nix,
		pub: bus.NewPublisher(d.JS, logger), tracer: bus.Tracer(d.TracerProvider, "nixbus.dev/nixbus/services/cache-uploader"),
		metrics: newMetrics(d.Registerer), publicKey: pub,
		links: &linker{nix: d.Nix}, closeSink: func() {}, made: time.Now(),
	}
	if err := s.openSink(); err != nil {
		return nil, fmt.Errorf("cache-uploader: %w", err)
	}
	return s, nil
}

// knownPaths bounds the store paths an uploader remembers as uploaded.
const knownPaths = 1 << 18

// openSink picks how outputs reach the cache: nixbus's own S3 uploads, or
// nix copy.
func (s *Service) openSink() error {
	loc, err := binarycache.Parse(s.cfg.CacheURL)
	if err != nil {
		return err
	}
	if loc.Kind != binarycache.KindS3 {
		s.sink = newNixSink(s, loc)
		return nil
	}
	bucket, err := binarycache.OpenS3(loc, s.cfg.S3)
	if err != nil {
		return err
	}
	checker := binarycache.NewBucketChecker(bucket, s.cfg.S3Uploads*4)
	s.sink = &s3Sink{s: s, loc: loc, bucket: bucket, checker: checker, known: newKnownSet(knownPaths)}
	s.closeSink = bucket.Close
	return nil
}

// PublicKey is the public half of the signing key, as clients of the cache
// list it in trusted-public-keys ("<name>:<base64>").
func (s *Service) PublicKey() string { return s.publicKey }

// Run uploads the outputs of successful builds until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	defer s.closeSink()
	if err := bus.EnsureStreams(ctx, s.js, bus.StreamOptions{}); err != nil {
		return fmt.Errorf("cache-uploader: %w", err)
	}
	runs, err := s.js.Stream(ctx, bus.StreamRuns)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cache-uploader: %w", err)
	}
	b := newBatcher(s.sink, s.cfg.BatchBuilds, func(builds int, took time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "failed"
		}
		s.metrics.batches.WithLabelValues(result).Observe(float64(builds))
		s.logger.Debug("batch uploaded", "builds", builds, "duration", took, "err", err)
	})
	h := &handler{s: s, runs: runs, batch: b}
	bctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.run(bctx)
	}()
	err = bus.Work(ctx, s.js, bus.WorkOptions{
		Stream: bus.StreamRuns, Durable: Consumer(s.cfg.Builders), Filter: bus.RunResults,
		Concurrency: s.cfg.Concurrency, AckWait: s.cfg.AckWait, RetryDelay: s.cfg.RetryDelay, StartTime: s.made,
		Tracer: s.tracer, SpanName: "upload",
	}, s.logger, h.handle)
	stop()
	<-done
	return err
}
