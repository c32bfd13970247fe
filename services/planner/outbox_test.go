package planner

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// retryCounter is a log handler that closes stuck once the planner's
// outbox has retried one publish three times (50, 100 and 200 ms of
// backoff: long enough for a 1 ms poll to wake hundreds of times).
type retryCounter struct {
	n     atomic.Int32
	stuck chan struct{}
}

func (h *retryCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *retryCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *retryCounter) WithGroup(string) slog.Handler            { return h }
func (h *retryCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "publish retry" && h.n.Add(1) == 3 {
		close(h.stuck)
	}
	return nil
}

// While the outbox is full and nothing is acknowledged, a run's backlog
// waits for the outbox to drain without waking up: it is woken by
// acknowledgements, not by a timer.
func TestBacklogWaitsForAcksWithoutPolling(t *testing.T) {
	e := newEnv(t)
	logs := &retryCounter{stuck: make(chan struct{})}
	p := e.newPlanner(testConfig(), Deps{Logger: slog.New(logs)})
	e.run(p)

	// A first run shows the planner is up (and has made its streams).
	e.startRun("ready", nil)
	e.evalDone("ready", 0, "")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("ready").GetStatus())

	// No build request is acknowledged while the builds stream is gone.
	require.NoError(t, e.js.DeleteStream(t.Context(), bus.StreamBuilds))
	const jobs = 3 * backlogInFlight
	e.startRun("big", nil)
	for i := range jobs {
		e.job("big", &nixbuspb.Job{Attr: fmt.Sprint("j", i), DrvPath: drv(fmt.Sprint("j", i)), System: x86})
	}
	e.evalDone("big", jobs, "")
	select {
	case <-logs.stuck:
	case <-t.Context().Done():
		t.Fatal("the outbox never retried")
	}
	released := testutil.ToFloat64(p.metrics.released.WithLabelValues(x86))
	require.GreaterOrEqual(t, released, float64(backlogInFlight), "the backlog filled the outbox")
	require.Less(t, released, float64(jobs), "the backlog stopped at a full outbox")
	// One wake-up at most: a drain signalled before the outbox filled.
	require.LessOrEqual(t, testutil.ToFloat64(p.metrics.outboxWaits), 1.0, "the backlog polled a full outbox")

	// Once requests are stored again, the rest follows.
	require.NoError(t, bus.EnsureStreams(t.Context(), e.js, bus.StreamOptions{}))
	e.startBuilder(succeedAll)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("big").GetStatus())
	require.Equal(t, float64(jobs), testutil.ToFloat64(p.metrics.released.WithLabelValues(x86)))
	waits := testutil.ToFloat64(p.metrics.outboxWaits)
	require.GreaterOrEqual(t, waits, 1.0, "the backlog waited for the outbox")
	require.LessOrEqual(t, waits, float64(2*jobs+1), "at most one wake-up per message settled")
}
