package planner

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// answerWith publishes res as the builder's answer to req, with the log
// key and error a real builder gives.
func (q *requests) answerWith(req *nixbuspb.BuildRequest, res *nixbuspb.BuildResult) {
	res.RunId, res.DrvPath, res.System, res.Attrs, res.RestartSeq = req.GetRunId(), req.GetDrvPath(), req.GetSystem(), req.GetAttrs(), req.GetRestartSeq()
	res.LogKey, res.DurationMs = bus.LogKey(req.GetRunId(), req.GetDrvPath()), 1234
	q.e.publish(bus.RunSubject(req.GetRunId(), bus.RunResultKind), bus.MsgIDRebuildResult(req.GetRunId(), req.GetDrvPath(), req.GetRestartSeq()), res)
}

// runOne starts run with the given jobs, all on x86, and a change of its own.
func (e *env) runOne(run string, change int64, jobs ...*nixbuspb.Job) {
	e.startRun(run, &nixbuspb.ChangeEvent{Project: "p", Change: change, Patchset: 1})
	for _, j := range jobs {
		j.System = x86
		e.job(run, j)
	}
	e.evalDone(run, len(jobs), "")
}

var failedExit1 = &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_FAILED, ExitCode: 1,
	Error: "builder for '/nix/store/…-flaky.drv' failed with exit code 1"}

// TestPlannerFailedBuildCache: a derivation whose build failed is not built
// in a later run: its job fails at once, saying so and linking the first
// failure's log, and what depends on it is skipped with that link too
// (issue 11, "Failed-build cache").
func TestPlannerFailedBuildCache(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	e.startPlannerWith(testConfig(), reg, nil)
	q := e.requests()
	flaky, user, other := drv("flaky"), drv("user"), drv("other")

	e.runOne("r1", 1, &nixbuspb.Job{Attr: "flaky", DrvPath: flaky})
	q.answerWith(q.next(), clone(failedExit1))
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, e.verdict("r1").GetStatus())

	e.runOne("r2", 2, &nixbuspb.Job{Attr: "flaky", DrvPath: flaky}, &nixbuspb.Job{Attr: "alias.flaky", DrvPath: flaky},
		&nixbuspb.Job{Attr: "user", DrvPath: user, DependsOn: []string{flaky}}, &nixbuspb.Job{Attr: "other", DrvPath: other})
	req := q.next()
	require.Equal(t, other, req.GetDrvPath(), "only the job that did not fail before is built")
	q.answerWith(req, &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
	v := e.verdict("r2")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.EqualValues(t, 2, v.GetFailedCount())
	require.EqualValues(t, 1, v.GetSkippedCount())

	got := e.outcomes("r2")
	firstLog := bus.LogKey("r1", flaky)
	for _, attr := range []string{"flaky", "alias.flaky"} {
		o := got[attr]
		require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_FAILED, o.GetStatus(), attr)
		require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_CACHED, o.GetFailure(), attr)
		require.Equal(t, "failed in an earlier build (cached failure): "+failedExit1.GetError(), o.GetReason(), attr)
		require.Equal(t, firstLog, o.GetLogKey(), "the first failure's log")
		require.EqualValues(t, 1234, o.GetDurationMs())
	}
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_SKIPPED, got["user"].GetStatus())
	require.Equal(t, "dependency flaky failed", got["user"].GetReason())
	require.Equal(t, firstLog, got["user"].GetLogKey())
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, got["other"].GetStatus())
	require.Equal(t, 2.0, counterOf(t, reg, "nixbus_planner_cached_failures_total"), "two jobs failed from the cache")
}

// counterOf reads a counter without labels from g.
func counterOf(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func clone(m *nixbuspb.BuildResult) *nixbuspb.BuildResult {
	return proto.Clone(m).(*nixbuspb.BuildResult)
}

// cachedFailure waits for run's verdict and returns how its one failed
// job failed.
func (e *env) failureOf(run string) nixbuspb.FailureKind {
	e.t.Helper()
	v := e.verdict(run)
	require.Len(e.t, v.GetFailed(), 1)
	return v.GetFailed()[0].GetFailure()
}

// TestPlannerFailedBuildCacheKeepsOwnFailuresOnly: only a build's own
// failure is remembered: a non-zero exit, the time limit, silence; not an
// infrastructure failure the builder's retries did not get past, nor a
// cancelled build.
func TestPlannerFailedBuildCacheKeepsOwnFailuresOnly(t *testing.T) {
	for _, tt := range []struct {
		name   string
		res    *nixbuspb.BuildResult
		cached bool
	}{
		{"non-zero exit", failedExit1, true},
		{"time limit", &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT, Error: "build timed out after 3h0m0s"}, true},
		{"silence", &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT, Error: "builder for '…' timed out after 1200 seconds of silence"}, true},
		{"transient", &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_FAILED, ExitCode: 1, Error: "error: writing to file: No space left on device",
			Transient: "store out of space"}, false},
		{"cancelled", &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_CANCELLED, Error: "run cancelled"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.startPlanner(testConfig())
			q := e.requests()
			x := drv("x")
			e.runOne("r1", 1, &nixbuspb.Job{Attr: "x", DrvPath: x})
			q.answerWith(q.next(), clone(tt.res))
			e.verdict("r1")

			e.runOne("r2", 2, &nixbuspb.Job{Attr: "x", DrvPath: x})
			if tt.cached {
				require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_CACHED, e.failureOf("r2"))
				return
			}
			req := q.next()
			require.Equal(t, x, req.GetDrvPath(), "built again")
			q.answerWith(req, &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
			require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("r2").GetStatus())
		})
	}
}

// failedEntry reads drv's entry in the failed-build cache bucket (nil:
// none).
func (e *env) failedEntry(drvPath string) (*nixbuspb.FailedBuild, error) {
	kv, err := e.js.KeyValue(e.t.Context(), FailedBucket)
	if err != nil {
		return nil, err
	}
	ent, err := kv.Get(e.t.Context(), failedKey(drvPath))
	if bus.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var fb nixbuspb.FailedBuild
	return &fb, bus.Decode(ent.Value(), &fb)
}

// TestPlannerFailedBuildCacheSkipsDeadlines: failures the planner decides
// (no builder for a system, the run deadline) are not the builds' own and
// are not remembered; a real failure in the same planner is.
func TestPlannerFailedBuildCacheSkipsDeadlines(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.RunTimeout = time.Hour
	cfg.NoBuilderTimeout = 10 * time.Minute
	reg, c := e.startPlannerHearing(cfg, x86)
	q := e.requests()

	// "arm" has no builder; "slow" is still building at the deadline;
	// "broken" fails by itself.
	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 1, Patchset: 1})
	e.job("r1", &nixbuspb.Job{Attr: "arm", DrvPath: drv("arm"), System: arm})
	e.job("r1", &nixbuspb.Job{Attr: "slow", DrvPath: drv("slow"), System: x86})
	e.job("r1", &nixbuspb.Job{Attr: "broken", DrvPath: drv("broken"), System: x86})
	e.evalDone("r1", 3, "")
	for range 3 {
		req := q.next()
		if req.GetDrvPath() == drv("broken") {
			q.answerWith(req, clone(failedExit1))
		}
	}
	c.add(6 * time.Minute)
	e.alive(reg, c, x86)
	c.add(6 * time.Minute)
	require.Eventually(t, func() bool { return e.stored(bus.StreamReports, bus.OutcomeSubject("r1")) == 2 }, 10*time.Second, 10*time.Millisecond, "arm failed for want of a builder")
	c.add(time.Hour)
	v := e.verdict("r1")
	require.EqualValues(t, 3, v.GetFailedCount())

	fb, err := e.failedEntry(drv("broken"))
	require.NoError(t, err)
	require.NotNil(t, fb, "a build's own failure is remembered")
	require.Equal(t, "r1", fb.GetRunId())
	require.Equal(t, bus.LogKey("r1", drv("broken")), fb.GetLogKey())
	// These failures have no build result, and only build results are
	// recorded (remember): this half documents rather than guards, and
	// fails only if failBuilding ever feeds the cache.
	for _, d := range []string{drv("arm"), drv("slow")} {
		fb, err := e.failedEntry(d)
		require.NoError(t, err)
		require.Nil(t, fb, "%s did not fail by itself", d)
	}
}

// TestPlannerFailedBuildCacheTTL: --planner.failed-cache-ttl 0 disables
// the cache (no bucket, every failure built again), and a failure older
// than the TTL is built again.
func TestPlannerFailedBuildCacheTTL(t *testing.T) {
	t.Run("disabled", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig()
		cfg.FailedCacheTTL = 0
		e.startPlanner(cfg)
		q := e.requests()
		e.runOne("r1", 1, &nixbuspb.Job{Attr: "x", DrvPath: drv("x")})
		q.answerWith(q.next(), clone(failedExit1))
		e.verdict("r1")
		e.runOne("r2", 2, &nixbuspb.Job{Attr: "x", DrvPath: drv("x")})
		require.Equal(t, "r2", q.next().GetRunId(), "built again")
		fb, err := e.failedEntry(drv("x"))
		require.NoError(t, err)
		require.Nil(t, fb, "nothing recorded")
	})
	t.Run("expired", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig()
		cfg.FailedCacheTTL = time.Hour
		c := newClock()
		e.startPlannerWith(cfg, prometheus.NewRegistry(), c.now)
		q := e.requests()
		e.runOne("r1", 1, &nixbuspb.Job{Attr: "x", DrvPath: drv("x")})
		q.answerWith(q.next(), clone(failedExit1))
		e.verdict("r1")
		c.add(59 * time.Minute)
		e.runOne("r2", 2, &nixbuspb.Job{Attr: "x", DrvPath: drv("x")})
		require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_CACHED, e.failureOf("r2"), "within the TTL")
		c.add(2 * time.Minute) // the failure was stored a moment after the clock's start
		e.runOne("r3", 3, &nixbuspb.Job{Attr: "x", DrvPath: drv("x")})
		require.Equal(t, "r3", q.next().GetRunId(), "built again")
	})
}

// TestPlannerRestartBypassesFailedBuildCache: a job that failed from the
// cache is rebuilt on request all the same, and the rebuild's success
// clears the entry, so the next run builds the derivation. The reopened
// run's other cached failure stays one.
func TestPlannerRestartBypassesFailedBuildCache(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	q := e.requests()
	x, y := drv("x"), drv("y")
	e.runOne("r1", 1, &nixbuspb.Job{Attr: "x", DrvPath: x}, &nixbuspb.Job{Attr: "y", DrvPath: y})
	q.answerWith(q.next(), clone(failedExit1))
	q.answerWith(q.next(), clone(failedExit1))
	e.verdict("r1")
	e.runOne("r2", 2, &nixbuspb.Job{Attr: "x", DrvPath: x}, &nixbuspb.Job{Attr: "y", DrvPath: y})
	require.EqualValues(t, 2, e.verdict("r2").GetFailedCount())

	seq := e.restartJob("r2", x, 1)
	req := q.next()
	require.Equal(t, "r2", req.GetRunId())
	require.Equal(t, x, req.GetDrvPath())
	require.Equal(t, seq, req.GetRestartSeq(), "the restart rebuilds a cached failure")
	q.answerWith(req, &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
	require.Eventually(t, func() bool { fb, err := e.failedEntry(x); return err == nil && fb == nil }, 10*time.Second, 10*time.Millisecond,
		"the rebuild's success clears the cache entry")
	v := e.verdictRevision("r2", seq)
	require.Len(t, v.GetFailed(), 1)
	require.Equal(t, "y", v.GetFailed()[0].GetAttr())
	require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_CACHED, v.GetFailed()[0].GetFailure(), "still a cached failure")
	require.Equal(t, bus.LogKey("r1", y), v.GetFailed()[0].GetLogKey())

	e.runOne("r3", 3, &nixbuspb.Job{Attr: "x", DrvPath: x})
	req = q.next()
	require.Equal(t, "r3", req.GetRunId(), "built again")
	require.Equal(t, x, req.GetDrvPath())
}

// TestPlannerRestartRestoresCacheAsPlanned: a run restored for a restart
// reads the failed-build cache as it was when the run was planned: a
// failure another run recorded later does not turn a job the run built
// into a cached failure.
func TestPlannerRestartRestoresCacheAsPlanned(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	q := e.requests()
	x, y := drv("x"), drv("y")
	e.runOne("r1", 1, &nixbuspb.Job{Attr: "x", DrvPath: x}, &nixbuspb.Job{Attr: "y", DrvPath: y})
	for range 2 {
		req := q.next()
		if req.GetDrvPath() == y {
			q.answerWith(req, clone(failedExit1))
		} else {
			q.answerWith(req, &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
		}
	}
	require.EqualValues(t, 1, e.verdict("r1").GetFailedCount())
	// Then another run's build of x fails: the cache says x failed.
	e.runOne("r2", 2, &nixbuspb.Job{Attr: "x", DrvPath: x})
	q.answerWith(q.next(), clone(failedExit1))
	e.verdict("r2")
	require.Eventually(t, func() bool { fb, err := e.failedEntry(x); return err == nil && fb != nil }, 10*time.Second, 10*time.Millisecond)

	seq := e.restartJob("r1", y, 1)
	req := q.next()
	require.Equal(t, "r1", req.GetRunId())
	require.Equal(t, y, req.GetDrvPath())
	q.answerWith(req, &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
	v := e.verdictRevision("r1", seq)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, v.GetStatus(), "x was built in r1: %v", v.GetFailed())
}
