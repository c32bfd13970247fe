package e2e

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	"nixbus.dev/nixbus/services/reporter"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startPlanner runs a planner process's instance with args until the
// returned stop is called.
func startPlanner(t *testing.T, url string, w io.Writer, args ...string) func() {
	t.Helper()
	var o app.Options
	fs := newFlagSet()
	o.RegisterFlags(fs)
	require.NoError(t, fs.Parse(append([]string{"--nats.url", url, "--state-dir", t.TempDir(), "--service", "planner"}, args...)))
	ctx, cancel := context.WithCancel(t.Context())
	inst, err := app.Start(ctx, o, testConfigs(t), io.Discard, slog.New(slog.NewTextHandler(w, nil)))
	require.NoError(t, err)
	return func() {
		cancel()
		require.NoError(t, inst.Wait())
	}
}

func maxAges(t *testing.T, js jetstream.JetStream) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for _, name := range []string{bus.StreamRuns, bus.StreamReports, "KV_" + reporter.VotesBucket, "OBJ_" + bus.LogBucket} {
		s, err := js.Stream(t.Context(), name)
		require.NoError(t, err)
		out[name] = s.CachedInfo().Config.MaxAge
	}
	return out
}

func allAre(d time.Duration) map[string]time.Duration {
	return map[string]time.Duration{bus.StreamRuns: d, bus.StreamReports: d, "KV_" + reporter.VotesBucket: d, "OBJ_" + bus.LogBucket: d}
}

// TestStreamSettingsHaveOneOwner: the operator sets the history to 720h
// with `nixbus streams apply`; a planner restarted with the default flags
// (168h) keeps it and warns; `nixbus streams show` names the difference;
// only an explicit --nats.apply-stream-config changes it.
func TestStreamSettingsHaveOneOwner(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	code, out, errOut := mainOut(t, "streams", "--nats.url", srv.URL, "--state-dir", t.TempDir(), "--nats.max-age", "720h", "apply")
	require.Equal(t, 0, code, out+errOut)
	require.Equal(t, allAre(720*time.Hour), maxAges(t, js))

	var logs lockedBuffer
	startPlanner(t, srv.URL, &logs)()
	require.Equal(t, allAre(720*time.Hour), maxAges(t, js), "a planner with default flags changed the history")
	require.Contains(t, logs.String(), "stream settings differ from the flags")
	require.Contains(t, logs.String(), "stream="+bus.StreamRuns+" setting=max-age have=720h0m0s flags=168h0m0s")

	code, out, errOut = mainOut(t, "streams", "--nats.url", srv.URL, "--state-dir", t.TempDir(), "show")
	require.Equal(t, 0, code, out+errOut)
	require.Contains(t, out, bus.StreamRuns+": max-age 720h0m0s")
	require.Contains(t, out, "differs: "+bus.StreamRuns+" max-age is 720h0m0s, flags ask for 168h0m0s")

	startPlanner(t, srv.URL, io.Discard, "--nats.max-age", "336h", "--nats.apply-stream-config")()
	require.Equal(t, allAre(336*time.Hour), maxAges(t, js))
}

// TestConsumerSettingsHaveOneOwner: a consumer's settings are its
// service's flags, and they too change only when the operator asks.
func TestConsumerSettingsHaveOneOwner(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	o := bus.WorkOptions{Stream: bus.StreamBuilds, Durable: "builder-x", Filter: bus.BuildSubject("x"), AckWait: time.Minute}
	_, err := bus.EnsureConsumer(t.Context(), js, o)
	require.NoError(t, err)

	o.AckWait = 2 * time.Minute
	c, err := bus.EnsureConsumer(t.Context(), js, o)
	require.NoError(t, err)
	require.Equal(t, time.Minute, c.CachedInfo().Config.AckWait, "a process's flags changed a consumer")

	c, err = bus.EnsureConsumer(bus.WithApplySettings(t.Context()), js, o)
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, c.CachedInfo().Config.AckWait)
}
