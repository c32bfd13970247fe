package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	"nixbus.dev/nixbus/pkg/prom"
)

// get fetches path from inst's HTTP server.
func get(t require.TestingT, inst *Instance, path string) (int, string) {
	resp, err := http.Get("http://" + inst.HTTPAddr + path)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// startArgs starts what the command line args of `nixbus serve` say.
func startArgs(ctx context.Context, t *testing.T, args ...string) (*Instance, error) {
	t.Helper()
	var o Options
	var c Configs
	fs := newFlagSet("test", io.Discard)
	o.RegisterFlags(fs)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(args))
	return Start(ctx, o, &c, io.Discard, slog.New(slog.DiscardHandler))
}

// startHTTP starts services on an external NATS with an HTTP server.
func startHTTP(t *testing.T, url string, args ...string) *Instance {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	inst, err := startArgs(ctx, t, append([]string{"--nats.url", url, "--state-dir", t.TempDir(), "--http.address", "127.0.0.1:0"}, args...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		require.NoError(t, inst.Wait())
	})
	return inst
}

// TestHealthzFollowsNATS: /healthz and /readyz answer 503 with the reason
// while NATS is down, and 200 again once it is back; /readyz only once
// the services' durable consumers exist.
func TestHealthzFollowsNATS(t *testing.T) {
	srv := natstest.Start(t)
	inst := startHTTP(t, srv.URL, "--service", "reporter", "--service", "evaluator")
	status := func(path string, want int, body string) {
		t.Helper()
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			code, got := get(c, inst, path)
			assert.Equal(c, want, code, got)
			assert.Contains(c, got, body)
		}, 20*time.Second, 20*time.Millisecond)
	}
	status("/readyz", http.StatusOK, "ok")
	status("/healthz", http.StatusOK, "ok")

	srv.Stop()
	status("/healthz", http.StatusServiceUnavailable, "nats connection of reporter: RECONNECTING")
	status("/healthz", http.StatusServiceUnavailable, "nats connection of evaluator: RECONNECTING")
	status("/readyz", http.StatusServiceUnavailable, "nats connection of")

	srv.StartAgain(t)
	status("/healthz", http.StatusOK, "ok")
	status("/readyz", http.StatusOK, "ok")
}

// fakeStarter is a service that says when it has started.
type fakeStarter struct{ started atomic.Bool }

func (*fakeStarter) Run(context.Context) error { return nil }
func (f *fakeStarter) Started() bool           { return f.started.Load() }

// TestReadyzWaitsForDurables: /readyz is 503 and names the durable
// consumer a service has not made yet (a builder of a system still
// starting) and a service that says it has not started (the planner),
// and is 200 once both are there.
func TestReadyzWaitsForDurables(t *testing.T) {
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	h := &health{consumers: prom.NewConsumers(prom.AskTimeout)}
	h.add("builder", serviceFunc(func(context.Context) error { return nil }), nc, js, []bus.Durable{{Stream: bus.StreamBuilds, Name: bus.ConsumerBuilder("riscv64-linux")}})
	planner := &fakeStarter{}
	h.add("planner", planner, nc, js, nil)
	mux := http.NewServeMux()
	h.handle(mux)
	readyz := func() (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	code, body := readyz()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "not started: planner\n", body)
	planner.started.Store(true)
	code, body = readyz()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "not started: consumer builder-riscv64-linux on NIXBUS_BUILDS")

	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	_, err := bus.EnsureConsumer(t.Context(), js, bus.WorkOptions{Stream: bus.StreamBuilds, Durable: bus.ConsumerBuilder("riscv64-linux"), Filter: bus.BuildSubject("riscv64-linux")})
	require.NoError(t, err)
	code, body = readyz()
	require.Equal(t, http.StatusOK, code, body)
}
