package app

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidateEndpoint(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		ok       bool
	}{
		{"", true},
		{"http://localhost:4318", true},
		{"https://otel.example.org/", true},
		{"localhost:4318", false},
		{"grpc://localhost:4317", false},
		{"http://", false},
	} {
		t.Run(tc.endpoint, func(t *testing.T) {
			err := validateEndpoint(tc.endpoint)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

func TestTracingProviders(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	// No endpoint: a nil interface, which services turn into a no-op.
	tp, err := newTracing("", logger).provider(t.Context(), "builder")
	require.NoError(t, err)
	require.Nil(t, tp)

	tr := newTracing("http://127.0.0.1:4318", logger)
	tp, err = tr.provider(t.Context(), "builder")
	require.NoError(t, err)
	require.IsType(t, &sdktrace.TracerProvider{}, tp)
	tr.shutdown() // nothing to flush: no request is made
	tr.shutdown()
}
