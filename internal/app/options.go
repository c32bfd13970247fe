package app

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/bus"
)

// DefaultHTTPAddress is where `nixbus serve` serves /metrics, /logs/ and
// the status pages unless --http.address says otherwise: loopback only, as
// build logs may hold what a change author must not read. Any other
// interface has to be asked for (e.g. --http.address :9464, behind a proxy
// that authenticates).
const DefaultHTTPAddress = "127.0.0.1:9464"

// Options are the process-wide settings every mode shares: where NATS is,
// where state lives, logging, the HTTP endpoint, and nix options.
type Options struct {
	// NATSURL names an external NATS; empty starts an embedded server.
	NATSURL string
	// NATSListen lets outside processes reach the embedded server.
	NATSListen string
	// NATSAuth are the credentials and TLS files for an external NATS.
	NATSAuth NATSAuth
	StateDir string
	// HTTPAddress serves /metrics and /logs/; empty serves nothing.
	HTTPAddress string
	LogLevel    string
	LogFormat   string
	// NixOptions are passed to every nix call as --option NAME VALUE.
	NixOptions listFlag
	// Services to run, in any order; empty means all.
	Services listFlag
	Streams  bus.StreamOptions
	// ApplyStreams lets this process change existing streams' and its
	// consumers' settings to its flags; without it they are only checked.
	ApplyStreams bool
	// OTelEndpoint is the OTLP/HTTP base URL spans are exported to (see
	// tracesURL for the environment's say); empty exports nothing.
	OTelEndpoint string
}

// RegisterFlags registers the shared flags, once, in main's flag set.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.NATSURL, "nats.url", os.Getenv("NIXBUS_NATS_URL"), "external NATS server URL; empty starts an embedded one with JetStream under the state dir")
	fs.StringVar(&o.NATSURL, "nats", os.Getenv("NIXBUS_NATS_URL"), "short for --nats.url")
	fs.StringVar(&o.NATSListen, "nats.listen", "", "host:port on which the embedded NATS accepts outside clients (default: in-process only)")
	o.NATSAuth.registerFlags(fs)
	fs.StringVar(&o.StateDir, "state-dir", envOr("NIXBUS_STATE_DIR", ".nixbus"), "directory for JetStream data, the file binary cache, keys and work dirs")
	fs.StringVar(&o.HTTPAddress, "http.address", "", "address serving /metrics, /logs/ and the status pages (empty: none; nixbus serve: "+DefaultHTTPAddress+", loopback only)")
	fs.StringVar(&o.LogLevel, "log.level", "info", "debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log.format", "text", "text or json")
	fs.Var(&o.NixOptions, "nix.option", "NAME=VALUE passed to every nix call as --option (repeatable)")
	fs.Var(&o.Services, "service", "service to run (repeatable; default all, env NIXBUS_SERVICES)")
	o.Streams = bus.DefaultStreamOptions()
	fs.DurationVar(&o.Streams.DuplicateWindow, "nats.duplicate-window", o.Streams.DuplicateWindow, "how long JetStream remembers message ids")
	fs.DurationVar(&o.Streams.MaxAge, "nats.max-age", o.Streams.MaxAge, "how long run history is kept")
	fs.IntVar(&o.Streams.Replicas, "nats.replicas", o.Streams.Replicas, "replicas of streams, KV and object buckets on a clustered NATS: 1 or 3")
	fs.BoolVar(&o.ApplyStreams, "nats.apply-stream-config", false,
		"change existing streams, buckets and this process's consumers to these flags (default: create what is missing, warn about differences; see `nixbus streams`)")
	fs.StringVar(&o.OTelEndpoint, "otel.endpoint", "",
		"OTLP/HTTP endpoint traces are sent to, e.g. http://localhost:4318, as <endpoint>/v1/traces (default: env OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, the full URL, else OTEL_EXPORTER_OTLP_ENDPOINT; none: no tracing)")
}

// Validate checks the shared options.
func (o *Options) Validate() error {
	if o.StateDir == "" {
		return fmt.Errorf("--state-dir must be set")
	}
	// Paths derived from it become URLs (file://…) and nix arguments.
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	o.StateDir = abs
	if len(o.Services) == 0 {
		if env := os.Getenv("NIXBUS_SERVICES"); env != "" {
			o.Services = strings.Split(env, ",")
		}
	}
	for _, s := range o.Services {
		if !known(s) {
			return fmt.Errorf("unknown service %q (known: %s)", s, strings.Join(Names(), ", "))
		}
	}
	for _, kv := range o.NixOptions {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("--nix.option %q: want NAME=VALUE", kv)
		}
	}
	if _, err := o.level(); err != nil {
		return err
	}
	if err := checkNATSURL(o.NATSURL); err != nil {
		return err
	}
	if err := o.NATSAuth.validate(o.NATSURL); err != nil {
		return err
	}
	if o.Streams.Replicas != 1 && o.Streams.Replicas != 3 {
		return fmt.Errorf("--nats.replicas must be 1 or 3")
	}
	if o.Streams.Replicas > 1 && o.NATSURL == "" {
		return fmt.Errorf("--nats.replicas %d needs a clustered NATS (--nats.url)", o.Streams.Replicas)
	}
	if o.Streams.DuplicateWindow < time.Second {
		return fmt.Errorf("--nats.duplicate-window must be at least 1s")
	}
	_, err = o.tracesURL()
	return err
}

func (o *Options) level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return l, fmt.Errorf("--log.level: %w", err)
	}
	return l, nil
}

// Logger builds the process logger.
func (o *Options) Logger(w *os.File) *slog.Logger {
	l, _ := o.level()
	ho := &slog.HandlerOptions{Level: l}
	if o.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

func (o *Options) nixOptions() map[string]string {
	m := map[string]string{}
	for _, kv := range o.NixOptions {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
