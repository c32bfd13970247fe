// Package web serves nixbus's status pages: the runs, one run's jobs, one
// job's log (live while it builds, over Server-Sent Events), and, for
// admins logged in with OpenID Connect, buttons to cancel or restart a run
// and restart a failed job. It only reads the bus and publishes requests
// (Cancel, ChangeEvent, RestartJob); the services that own runs act on them.
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Deps are the web page's collaborators.
type Deps struct {
	JS         jetstream.JetStream
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// TracerProvider is unused for now (pages are not traced); nil is fine.
	TracerProvider trace.TracerProvider
}

// Service serves the pages; Handler is mounted by the caller, Run keeps
// the runs index up to date.
type Service struct {
	cfg     Config
	js      jetstream.JetStream
	logger  *slog.Logger
	pub     *bus.Publisher
	auth    *auth
	index   *index
	runs    *runCache
	tmpl    *template.Template
	live    chan struct{} // one slot per live log followed
	metrics *metrics
	handler http.Handler
}

// New checks cfg and returns the web service.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Logger == nil {
		return nil, errors.New("web: JS and Logger are required")
	}
	if d.Registerer == nil {
		d.Registerer = prometheus.NewRegistry()
	}
	a := &auth{cfg: cfg}
	if cfg.SessionKeyFile != "" {
		key, err := os.ReadFile(cfg.SessionKeyFile)
		if err != nil {
			return nil, fmt.Errorf("web: session key: %w", err)
		}
		if len(key) < 32 {
			return nil, fmt.Errorf("web: session key in %s is shorter than 32 bytes", cfg.SessionKeyFile)
		}
		a.key = key
	} else {
		a.key = []byte(random() + random())
	}
	if cfg.ClientSecretFile != "" {
		secret, err := os.ReadFile(cfg.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("web: client secret: %w", err)
		}
		a.secret = strings.TrimSpace(string(secret))
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("web: templates: %w", err)
	}
	logger := d.Logger.With("service", "web")
	s := &Service{
		cfg: cfg, js: d.JS, logger: logger, pub: bus.NewPublisher(d.JS, logger), auth: a,
		index: newIndex(cfg.MaxRuns), runs: newRunCache(cfg.RunCache), tmpl: tmpl,
		live: make(chan struct{}, cfg.MaxLiveClients), metrics: newMetrics(d.Registerer),
	}
	s.handler = s.routes()
	return s, nil
}

// Handler serves every page; mount it at "/".
func (s *Service) Handler() http.Handler { return s.handler }

// Run follows run starts, cancellations and verdicts into the runs index
// until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := bus.EnsureStreams(ctx, s.js, bus.StreamOptions{}); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("web: %w", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	follow := func(stream string, filters []string, fn func(jetstream.Msg)) {
		defer wg.Done()
		cons, err := s.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
		if err != nil {
			if ctx.Err() == nil {
				errs <- fmt.Errorf("web: follow %s: %w", stream, err)
			}
			return
		}
		cc, err := cons.Consume(fn)
		if err != nil {
			if ctx.Err() == nil {
				errs <- fmt.Errorf("web: follow %s: %w", stream, err)
			}
			return
		}
		<-ctx.Done()
		cc.Stop()
		<-cc.Closed()
	}
	wg.Add(2)
	go follow(bus.StreamRuns, []string{bus.RunStarts, bus.RunCancels}, s.onRunMsg)
	go follow(bus.StreamReports, []string{bus.VerdictAll}, s.onVerdict)
	s.logger.Info("web started", "login", s.auth.enabled(), "public_read", s.cfg.PublicRead)
	wg.Wait()
	close(errs)
	return <-errs
}

func (s *Service) onRunMsg(msg jetstream.Msg) {
	run, kind, err := bus.ParseRunSubject(msg.Subject())
	if err != nil {
		return
	}
	switch kind {
	case bus.RunStartedKind:
		var m nixbuspb.RunStarted
		meta, err := msg.Metadata()
		if err != nil || bus.Decode(msg.Data(), &m) != nil {
			return
		}
		s.index.started(meta.Sequence.Stream, &m)
	case bus.RunCancelKind:
		s.index.cancelled(run)
	}
}

func (s *Service) onVerdict(msg jetstream.Msg) {
	var v nixbuspb.RunVerdict
	if bus.Decode(msg.Data(), &v) == nil {
		s.index.verdict(&v)
	}
}
