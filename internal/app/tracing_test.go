package app

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The flag wins, then the traces variable (a full URL, as it is), then the
// general one (a base URL); each is checked.
func TestTracesURL(t *testing.T) {
	for _, tc := range []struct {
		name, flag, traces, base string
		want                     string
		ok                       bool
	}{
		{name: "none", ok: true},
		{name: "flag", flag: "http://localhost:4318", want: "http://localhost:4318/v1/traces", ok: true},
		{name: "flag slash", flag: "https://otel.example.org/", want: "https://otel.example.org/v1/traces", ok: true},
		{name: "flag wins", flag: "http://flag:4318", traces: "http://traces:4318/x", base: "http://base:4318",
			want: "http://flag:4318/v1/traces", ok: true},
		{name: "traces env as is", traces: "http://traces:4318/custom/path", base: "http://base:4318",
			want: "http://traces:4318/custom/path", ok: true},
		{name: "base env", base: "http://base:4318", want: "http://base:4318/v1/traces", ok: true},
		{name: "flag no scheme", flag: "localhost:4318"},
		{name: "flag grpc", flag: "grpc://localhost:4317"},
		{name: "flag no host", flag: "http://"},
		{name: "traces env bad", traces: "localhost:4318"},
		{name: "base env bad", base: "grpc://localhost:4317"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{envOTLPTracesEndpoint: tc.traces, envOTLPEndpoint: tc.base}
			got, err := resolveTracesURL(tc.flag, func(k string) string { return env[k] })
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestTracingProviders(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	// No endpoint: a nil interface, which services turn into a no-op.
	tp, err := newTracing("", logger).provider(t.Context(), "builder")
	require.NoError(t, err)
	require.Nil(t, tp)

	tr := newTracing("http://127.0.0.1:4318/v1/traces", logger)
	tp, err = tr.provider(t.Context(), "builder")
	require.NoError(t, err)
	require.IsType(t, &sdktrace.TracerProvider{}, tp)
	tr.shutdown() // nothing to flush: no request is made
	tr.shutdown()
}
