package planner

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// clock is a planner clock a test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// alive announces a builder of system, as a builder does, and waits until
// the planner has heard it at the clock's current time.
func (e *env) alive(reg prometheus.Gatherer, c *clock, system string) {
	e.t.Helper()
	data, err := bus.Encode(&nixbuspb.BuilderAlive{System: system, Builder: "b1"})
	require.NoError(e.t, err)
	want := float64(c.now().UnixMilli()) / 1000
	require.Eventually(e.t, func() bool {
		if e.js.Conn().Publish(bus.BuilderSubject(system), data) != nil {
			return false
		}
		v, ok := gaugeOf(reg, "nixbus_planner_builder_last_seen_seconds", system)
		return ok && v == want
	}, 10*time.Second, 20*time.Millisecond)
}

func gaugeOf(g prometheus.Gatherer, name, label string) (float64, bool) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, false
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestPlannerNoBuilder: jobs of a system no builder serves fail with "no
// builder for system X" once none has been heard for the timeout, while a
// system whose builders announce themselves waits (issue 8, hole 4).
func TestPlannerNoBuilder(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.NoBuilderTimeout = 10 * time.Minute
	reg, c := e.startPlannerHearing(cfg, x86)

	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 3, Patchset: 1})
	e.job("r1", &nixbuspb.Job{Attr: "x", DrvPath: drv("x"), System: x86})
	e.job("r1", &nixbuspb.Job{Attr: "arm", DrvPath: drv("arm"), System: arm})
	e.job("r1", &nixbuspb.Job{Attr: "after-arm", DrvPath: drv("after-arm"), System: x86, DependsOn: []string{drv("arm")}})
	e.evalDone("r1", 3, "")
	require.Eventually(t, func() bool {
		return e.stored(bus.StreamBuilds, bus.BuildSubject(x86)) == 1 && e.stored(bus.StreamBuilds, bus.BuildSubject(arm)) == 1
	}, 10*time.Second, 10*time.Millisecond)

	// Six minutes on, x86 builders still announce themselves.
	c.add(6 * time.Minute)
	e.alive(reg, c, x86)
	// Twelve: no arm builder was ever heard; x86 ones 6 minutes ago.
	c.add(6 * time.Minute)
	require.Eventually(t, func() bool { return e.stored(bus.StreamReports, bus.OutcomeSubject("r1")) == 2 }, 10*time.Second, 10*time.Millisecond)
	got := e.outcomes("r1")
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_FAILED, got["arm"].GetStatus())
	require.Equal(t, "no builder for system aarch64-linux: none seen for 10m0s", got["arm"].GetReason())
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_SKIPPED, got["after-arm"].GetStatus())
	require.NotContains(t, got, "x", "x86 builders are alive: x waits for its build")

	e.publish(bus.RunSubject("r1", bus.RunResultKind), bus.MsgIDResult("r1", drv("x")),
		&nixbuspb.BuildResult{RunId: "r1", DrvPath: drv("x"), System: x86, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
	v := e.verdict("r1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Equal(t, int64(1), v.GetSucceededCount())
	require.Equal(t, int64(1), v.GetFailedCount())
	require.Equal(t, int64(1), v.GetSkippedCount())
}

// TestPlannerRunDeadline: at --planner.run-timeout every unfinished job of
// a run fails with the reason, builders are told to stop, the run gets its
// verdict, and it no longer pins the checkpoint; a run whose evaluation
// never finished gets a verdict too (issue 8, hole 4).
func TestPlannerRunDeadline(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.RunTimeout = time.Hour
	cfg.NoBuilderTimeout = 100 * time.Hour
	c := newClock()
	e.startPlannerWith(cfg, prometheus.NewRegistry(), c.now)

	e.startRun("stuck", &nixbuspb.ChangeEvent{Project: "p", Change: 4, Patchset: 1})
	e.job("stuck", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
	e.job("stuck", &nixbuspb.Job{Attr: "b", DrvPath: drv("b"), System: x86, DependsOn: []string{drv("a")}})
	e.job("stuck", &nixbuspb.Job{Attr: "c", DrvPath: drv("c"), System: x86})
	e.evalDone("stuck", 3, "")
	e.startRun("no-eval", &nixbuspb.ChangeEvent{Project: "p", Change: 5, Patchset: 1})
	require.Eventually(t, func() bool {
		return e.stored(bus.StreamBuilds, bus.BuildSubject(x86)) == 2
	}, 10*time.Second, 10*time.Millisecond)
	// c is built; a and b never are.
	e.publish(bus.RunSubject("stuck", bus.RunResultKind), bus.MsgIDResult("stuck", drv("c")),
		&nixbuspb.BuildResult{RunId: "stuck", DrvPath: drv("c"), System: x86, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
	require.Eventually(t, func() bool { return e.stored(bus.StreamReports, bus.OutcomeSubject("stuck")) == 1 }, 10*time.Second, 10*time.Millisecond)

	c.add(time.Hour + time.Second)
	v := e.verdict("stuck")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Equal(t, int64(3), v.GetJobCount())
	require.Equal(t, int64(1), v.GetSucceededCount())
	got := e.outcomes("stuck")
	require.Len(t, got, 3)
	require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_TIMEOUT, got["a"].GetFailure())
	require.Equal(t, "run deadline passed: unfinished 1h0m0s after it started", got["a"].GetReason())
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_SKIPPED, got["b"].GetStatus())
	cancels := natstest.Read[nixbuspb.Cancel](t, e.js, bus.StreamRuns, bus.RunSubject("stuck", bus.RunCancelKind))
	require.Len(t, cancels, 1, "builders are told to stop the run's builds")

	v = e.verdict("no-eval")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Contains(t, v.GetEvalError(), "run deadline passed")

	// Neither pins the checkpoint any more.
	e.startRun("next", nil)
	e.evalDone("next", 0, "")
	e.verdict("next")
	kv, err := e.js.KeyValue(t.Context(), Bucket)
	require.NoError(t, err)
	runs, err := e.js.Stream(t.Context(), bus.StreamRuns)
	require.NoError(t, err)
	info, err := runs.Info(t.Context())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cp, err := loadCheckpoint(t.Context(), kv)
		return err == nil && cp > info.State.LastSeq
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, natstest.Read[nixbuspb.RunVerdict](t, e.js, bus.StreamReports, bus.VerdictSubject("stuck")), 1)
}

// startPlannerHearing starts a planner with cfg on a clock the test moves,
// with a builder of each of systems heard from at its start.
func (e *env) startPlannerHearing(cfg Config, systems ...string) (*prometheus.Registry, *clock) {
	c := newClock()
	reg := prometheus.NewRegistry()
	e.startPlannerWith(cfg, reg, c.now)
	for _, s := range systems {
		e.alive(reg, c, s)
	}
	return reg, c
}
