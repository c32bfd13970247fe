package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// tracing hands out one SDK TracerProvider per service of this process,
// each exporting over OTLP/HTTP with its own service.name (nixbus-<name>),
// so that Jaeger shows six services even when one process runs them all.
// With no endpoint it hands out nil: services then make no spans and only
// pass on the trace context they receive.
type tracing struct {
	url    string // OTLP/HTTP traces URL (<endpoint>/v1/traces); empty: off
	logger *slog.Logger

	mu        sync.Mutex
	providers []*sdktrace.TracerProvider
}

// shutdownTimeout bounds flushing the last spans on exit.
const shutdownTimeout = 5 * time.Second

// newTracing exports to the OTLP/HTTP traces URL url (see tracesURL).
func newTracing(url string, logger *slog.Logger) *tracing {
	return &tracing{url: url, logger: logger}
}

// The OpenTelemetry environment variables naming where traces go.
const (
	envOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// tracesURL is where spans are exported, checked: --otel.endpoint when
// given, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (a full URL, taken as it
// is), else OTEL_EXPORTER_OTLP_ENDPOINT; a base URL gets /v1/traces, as
// the OTLP exporter specification has it. Empty: no tracing.
func (o *Options) tracesURL() (string, error) {
	return resolveTracesURL(o.OTelEndpoint, os.Getenv)
}

func resolveTracesURL(flagValue string, getenv func(string) string) (string, error) {
	base, name := flagValue, "--otel.endpoint"
	if base == "" {
		if full := getenv(envOTLPTracesEndpoint); full != "" {
			return full, checkHTTPURL(envOTLPTracesEndpoint, full)
		}
		base, name = getenv(envOTLPEndpoint), envOTLPEndpoint
	}
	if base == "" {
		return "", nil
	}
	if err := checkHTTPURL(name, base); err != nil {
		return "", err
	}
	return strings.TrimRight(base, "/") + "/v1/traces", nil
}

// checkHTTPURL checks that name's value v is an http(s) URL with a host.
func checkHTTPURL(name, v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q: want http(s)://host:port, e.g. http://localhost:4318", name, v)
	}
	return nil
}

// provider is the TracerProvider of service, or nil when tracing is off.
func (t *tracing) provider(ctx context.Context, service string) (trace.TracerProvider, error) {
	if t == nil || t.url == "" {
		return nil, nil
	}
	// The standard OTEL_EXPORTER_OTLP_* variables (headers, certificates,
	// timeout, compression) still apply; the URL is tracesURL's.
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(t.url))
	if err != nil {
		return nil, fmt.Errorf("otlp exporter for %s: %w", service, err)
	}
	// OTEL_RESOURCE_ATTRIBUTES adds to the resource; the service name is
	// always nixbus-<service>, or all-in-one mode would merge the six.
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost(),
		resource.WithAttributes(semconv.ServiceName("nixbus-"+service), semconv.ServiceNamespace("nixbus")))
	if err != nil {
		return nil, fmt.Errorf("trace resource for %s: %w", service, err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(loggingExporter{exp, t.logger.With("service", service)}),
		sdktrace.WithResource(res),
	)
	t.mu.Lock()
	t.providers = append(t.providers, tp)
	t.mu.Unlock()
	return tp, nil
}

// shutdown flushes and stops every provider; spans still queued are sent
// within shutdownTimeout or lost.
func (t *tracing) shutdown() {
	if t == nil {
		return
	}
	t.mu.Lock()
	providers := t.providers
	t.providers = nil
	t.mu.Unlock()
	if len(providers) == 0 {
		return
	}
	// The run's ctx has ended by now; flushing needs a fresh one.
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	for _, tp := range providers {
		errs = append(errs, tp.Shutdown(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		t.logger.Warn("flush traces", "err", err)
	}
}

// loggingExporter reports failed exports on the process's logger rather
// than through OpenTelemetry's global error handler, which nixbus leaves
// alone (it is process-wide).
type loggingExporter struct {
	sdktrace.SpanExporter
	logger *slog.Logger
}

func (e loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if err := e.SpanExporter.ExportSpans(ctx, spans); err != nil {
		e.logger.Warn("export spans", "spans", len(spans), "err", err)
	}
	return nil
}
