package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natsembed"
	"nixbus.dev/nixbus/pkg/nix"
	"nixbus.dev/nixbus/pkg/prom"
)

// deps is what a constructor gets: its own NATS connection and the
// process's shared infrastructure.
type deps struct {
	js     jetstream.JetStream
	logger *slog.Logger
	reg    prometheus.Registerer
	nix    *nix.Nix
	out    io.Writer
	mux    *http.ServeMux
	// tp is the service's own TracerProvider, nil with tracing off.
	tp trace.TracerProvider
}

// Instance is a set of services running in this process, with the
// embedded NATS server when no external one was named.
type Instance struct {
	// Registry holds every metric of this instance.
	Registry *prometheus.Registry
	// HTTPAddr is where /metrics and /logs/ are served, if anywhere.
	HTTPAddr string

	server *server.Server
	url    string
	auth   []nats.Option
	// role is the bus role of connections that are no service's own: the
	// one service's when only one runs here.
	role    string
	conns   []*nats.Conn
	group   *errgroup.Group
	logger  *slog.Logger
	tracing *tracing
	health  *health
}

// Start validates everything, then starts NATS (if embedded) and the
// selected services, each on its own connection. It returns once all run;
// Wait blocks until ctx ends or one of them fails.
func Start(ctx context.Context, o Options, c *Configs, out io.Writer, logger *slog.Logger) (*Instance, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := c.Gerrit.Validate(); err != nil {
		return nil, err
	}
	c.defaults(o.StateDir)
	selected := o.Services
	if len(selected) == 0 {
		selected = Names()
	}
	traces, err := o.tracesURL()
	if err != nil {
		return nil, err
	}
	inst := &Instance{Registry: prometheus.NewRegistry(), url: o.NATSURL, logger: logger, tracing: newTracing(traces, logger)}
	if len(selected) == 1 {
		inst.role = selected[0]
	}
	auth, err := o.NATSAuth.options()
	if err != nil {
		return nil, err
	}
	inst.auth = auth
	inst.health = &health{consumers: prom.NewConsumers(prom.AskTimeout)}
	inst.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prom.BuildInfo(), inst.health.consumers)
	var mux *http.ServeMux
	if o.HTTPAddress != "" {
		mux = http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(inst.Registry, promhttp.HandlerOpts{}))
		inst.health.handle(mux)
	}

	if o.NATSURL == "" {
		dir := filepath.Join(o.StateDir, "nats")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create nats store: %w", err)
		}
		ns, err := natsembed.Start(natsembed.Options{StoreDir: dir, Listen: o.NATSListen})
		if err != nil {
			return nil, err
		}
		inst.server = ns
		if o.NATSListen != "" {
			inst.url = ns.ClientURL()
			logger.Info("embedded nats listening", "url", inst.url)
		}
	}

	// Construct every service before running any, so a bad config starts nothing.
	nixCmd := &nix.Nix{Options: o.nixOptions()}
	type built struct {
		name string
		svc  Service
	}
	var services []built
	for _, e := range registry {
		if !contains(selected, e.name) {
			continue
		}
		nc, err := inst.connect(e.name)
		if err != nil {
			inst.close()
			return nil, err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			inst.close()
			return nil, fmt.Errorf("jetstream for %s: %w", e.name, err)
		}
		tp, err := inst.tracing.provider(ctx, e.name)
		if err != nil {
			inst.close()
			return nil, err
		}
		svc, err := e.construct(c, deps{js: js, logger: logger, reg: inst.Registry, nix: nixCmd, out: out, mux: mux, tp: tp})
		if err != nil {
			inst.close()
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
		services = append(services, built{e.name, svc})
		var durables []bus.Durable
		if e.durables != nil {
			durables = e.durables(c, svc)
		}
		inst.health.add(e.name, svc, nc, js, durables)
	}
	// Streams exist before any service runs, so producers never publish
	// into nothing whatever order services come up in.
	if err := inst.ensureStreams(ctx, o.Streams, o.ApplyStreams, selected); err != nil {
		inst.close()
		return nil, err
	}

	var ln net.Listener
	if mux != nil {
		var err error
		if ln, err = net.Listen("tcp", o.HTTPAddress); err != nil {
			inst.close()
			return nil, fmt.Errorf("http listen: %w", err)
		}
		inst.HTTPAddr = ln.Addr().String()
	}

	if o.ApplyStreams {
		ctx = bus.WithApplySettings(ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	inst.group = g
	for _, b := range services {
		g.Go(func() error { return runService(gctx, b.name, b.svc) })
	}
	if ln != nil {
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	logger.Info("nixbus started", "services", selected)
	return inst, nil
}

// runService runs svc until ctx ends. It is where the rule "context ended
// ⇒ nil" is enforced for every service: once ctx has ended (a signal, or
// another service failed), whatever Run returns is a clean stop, even an
// error from a call that ctx interrupted while the service was starting.
func runService(ctx context.Context, name string, svc Service) error {
	err := svc.Run(ctx)
	if err == nil || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

// Wait blocks until every service returned, then closes connections and
// stops the embedded NATS server last.
func (i *Instance) Wait() error {
	err := i.group.Wait()
	i.close()
	return err
}

// Connect opens a client connection to this instance's NATS.
func (i *Instance) Connect(name string) (*nats.Conn, error) { return i.connect(name) }

func (i *Instance) connect(name string) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name("nixbus-" + name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}, i.auth...)
	// Each role may only read its own inbox (RolePermissions).
	role := i.role
	if known(name) {
		role = name
	}
	if role != "" {
		opts = append(opts, nats.CustomInboxPrefix(bus.InboxPrefix(role)))
	}
	url := i.url
	if i.server != nil && url == "" {
		opts = append(opts, nats.InProcessServer(i.server))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats for %s: %w", name, err)
	}
	i.conns = append(i.conns, nc)
	return nc, nil
}

// ensureStreams creates what is missing (the streams, and the buckets of
// the services that run here); existing ones keep their settings unless
// the operator asked for these (--nats.apply-stream-config), which sets
// every service's buckets too, as `nixbus streams apply` does.
func (i *Instance) ensureStreams(ctx context.Context, so bus.StreamOptions, apply bool, services []string) error {
	nc, err := i.connect("setup")
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if apply {
		if err := bus.ApplyStreams(ctx, js, so, buckets(nil)...); err != nil {
			return err
		}
		i.logger.Info("stream settings applied", "max_age", so.MaxAge, "duplicate_window", so.DuplicateWindow, "replicas", so.Replicas)
		return nil
	}
	diffs, err := bus.CheckStreams(ctx, js, so, buckets(services)...)
	for _, d := range diffs {
		i.logger.Warn("stream settings differ from the flags; keeping them (change them with `nixbus streams apply` or --nats.apply-stream-config)",
			"stream", d.Stream, "setting", d.Setting, "have", d.Have, "flags", d.Want)
	}
	return err
}

func (i *Instance) close() {
	// Every span has ended once the services returned: flush them.
	i.tracing.shutdown()
	for _, nc := range i.conns {
		nc.Close()
	}
	i.conns = nil
	if i.server != nil {
		i.server.Shutdown()
		i.server.WaitForShutdown()
		i.server = nil
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func stripPrefix(p string, h http.Handler) http.Handler { return http.StripPrefix(p, h) }
