package planner

import (
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// startPlannerWith runs a planner like startPlanner, with its metrics in
// reg and its clock at now (nil: the real one).
func (e *env) startPlannerWith(cfg Config, reg prometheus.Registerer, now func() time.Time) (stop func()) {
	e.t.Helper()
	p := e.newPlanner(cfg, Deps{Registerer: reg})
	if now != nil {
		p.now = now
	}
	return e.run(p)
}

// forgetIDs waits until JetStream's duplicate window has passed for every
// message published so far: a probe published again is stored again.
func (e *env) forgetIDs() {
	e.t.Helper()
	probe := &nixbuspb.JobOutcome{RunId: "probe"}
	data, err := bus.Encode(probe)
	require.NoError(e.t, err)
	_, err = e.js.Publish(e.t.Context(), bus.OutcomeSubject("probe"), data, jetstream.WithMsgID("probe"))
	require.NoError(e.t, err)
	require.Eventually(e.t, func() bool {
		ack, err := e.js.Publish(e.t.Context(), bus.OutcomeSubject("probe"), data, jetstream.WithMsgID("probe"))
		return err == nil && !ack.Duplicate
	}, 20*time.Second, 20*time.Millisecond, "the duplicate window never passed")
}

func (e *env) resetCheckpoint() {
	e.t.Helper()
	kv, err := e.js.KeyValue(e.t.Context(), Bucket)
	require.NoError(e.t, err)
	require.NoError(e.t, kv.Purge(e.t.Context(), checkpointKey))
}

// TestPlannerFinishedRunStaysFinished replays a finished run after the
// duplicate window passed: nothing of it is published again (issue 8,
// hole 5).
func TestPlannerFinishedRunStaysFinished(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	opts := bus.DefaultStreamOptions()
	opts.DuplicateWindow = 200 * time.Millisecond
	require.NoError(t, bus.EnsureStreams(t.Context(), js, opts))
	e := &env{t: t, srv: srv, js: js, pub: bus.NewPublisher(js, slog.New(slog.DiscardHandler))}

	stop := e.startPlanner(testConfig())
	b := e.startBuilder(func(r *nixbuspb.BuildRequest) nixbuspb.BuildStatus {
		if r.GetDrvPath() == drv("broken") {
			return nixbuspb.BuildStatus_BUILD_STATUS_FAILED
		}
		return nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
	})
	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 5, Patchset: 1})
	e.job("r1", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
	e.job("r1", &nixbuspb.Job{Attr: "broken", DrvPath: drv("broken"), System: x86, DependsOn: []string{drv("a")}})
	e.evalDone("r1", 2, "")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, e.verdict("r1").GetStatus())
	stop()

	// A restart long after, reading from before r1 (as a checkpoint that
	// another, long run pinned would make it).
	e.forgetIDs()
	e.resetCheckpoint()
	e.startPlanner(testConfig())
	e.startRun("r2", nil)
	e.evalDone("r2", 0, "")
	e.verdict("r2") // read after r1's messages

	require.Len(t, natstest.Read[nixbuspb.RunVerdict](t, e.js, bus.StreamReports, bus.VerdictSubject("r1")), 1)
	require.Len(t, natstest.Read[nixbuspb.JobOutcome](t, e.js, bus.StreamReports, bus.OutcomeSubject("r1")), 2)
	require.Equal(t, map[string]int{"r1/" + drv("a"): 1, "r1/" + drv("broken"): 1}, b.counts())
}

// TestPlannerReplayBound restarts a planner whose checkpoint is pinned by
// a run older than the run deadline: it does not replay that run, yet the
// run, which passed its deadline while no planner ran, gets its outcomes
// and one verdict (issue 8, hole 4: every run ends with a verdict), and
// its build is not released again.
func TestPlannerReplayBound(t *testing.T) {
	e := newEnv(t)
	stop := e.startPlanner(testConfig())
	// No builder: "old" never ends on its own.
	e.startRun("old", &nixbuspb.ChangeEvent{Project: "p", Change: 9, Patchset: 1})
	e.job("old", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
	e.job("old", &nixbuspb.Job{Attr: "b", DrvPath: drv("b"), System: x86, DependsOn: []string{drv("a")}})
	e.evalDone("old", 2, "")
	require.Eventually(t, func() bool {
		return e.stored(bus.StreamBuilds, bus.BuildSubject(x86)) == 1
	}, 10*time.Second, 10*time.Millisecond)
	stop()

	// Restarted with a run deadline "old" has passed: the planner's clock
	// stands still a run timeout after the last message of "old", so every
	// message from now on is within the deadline (and nothing waits for
	// the wall clock to pass one).
	cfg := testConfig()
	now := e.pastDeadline(cfg)
	reg := prometheus.NewRegistry()
	stop = e.startPlannerWith(cfg, reg, now)
	e.startRun("new", nil)
	e.evalDone("new", 0, "")
	e.verdict("new")
	require.Eventually(t, func() bool {
		v, err := tryGauge(reg, "nixbus_planner_active_runs")
		return err == nil && v == 0
	}, 5*time.Second, 10*time.Millisecond, "the old run was read again")

	v := e.verdict("old")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	got := e.outcomes("old")
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_FAILED, got["a"].GetStatus())
	require.Contains(t, got["a"].GetReason(), "run deadline passed")
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_SKIPPED, got["b"].GetStatus())
	require.Equal(t, 1, e.stored(bus.StreamBuilds, bus.BuildSubject(x86)), "a build of the old run released again")
	require.Equal(t, 1, e.stored(bus.StreamRuns, bus.RunSubject("old", bus.RunCancelKind)), "its builders are told to stop")

	// Another restart: "old" stays ended.
	stop()
	e.startPlannerWith(cfg, prometheus.NewRegistry(), now)
	e.startRun("newer", nil)
	e.evalDone("newer", 0, "")
	e.verdict("newer")
	require.Len(t, natstest.Read[nixbuspb.RunVerdict](t, e.js, bus.StreamReports, bus.VerdictSubject("old")), 1)
	require.Len(t, natstest.Read[nixbuspb.JobOutcome](t, e.js, bus.StreamReports, bus.OutcomeSubject("old")), 2)
}

// TestPlannerReplayBoundCancelled: a run older than the run deadline that
// was cancelled, with no verdict yet when its planner stopped, ends
// cancelled; one whose Cancel was its deadline's ends failed.
func TestPlannerReplayBoundCancelled(t *testing.T) {
	for _, tt := range []struct {
		reason string
		want   nixbuspb.RunStatus
	}{
		{"cancelled by an admin", nixbuspb.RunStatus_RUN_STATUS_CANCELLED},
		{deadlineReason + ": unfinished 1h0m0s after it started", nixbuspb.RunStatus_RUN_STATUS_FAILED},
	} {
		t.Run(tt.reason, func(t *testing.T) {
			e := newEnv(t)
			stop := e.startPlanner(testConfig())
			e.startRun("old", &nixbuspb.ChangeEvent{Project: "p", Change: 9, Patchset: 1})
			e.job("old", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
			e.evalDone("old", 1, "")
			require.Eventually(t, func() bool {
				return e.stored(bus.StreamBuilds, bus.BuildSubject(x86)) == 1
			}, 10*time.Second, 10*time.Millisecond)
			stop()
			// Cancelled while no planner ran (or before its verdict).
			require.NoError(t, e.pub.Publish(t.Context(), bus.RunSubject("old", bus.RunCancelKind), bus.MsgIDCancel("old"),
				&nixbuspb.Cancel{RunId: "old", Reason: tt.reason}, nil))

			cfg := testConfig()
			e.startPlannerWith(cfg, prometheus.NewRegistry(), e.pastDeadline(cfg))
			require.Equal(t, tt.want, e.verdict("old").GetStatus())
		})
	}
}

// pastDeadline is a clock standing still a run timeout (of cfg) after the
// last message on the runs stream: every run there has passed its
// deadline, and nothing waits for the wall clock to pass one.
func (e *env) pastDeadline(cfg Config) func() time.Time {
	runs, err := e.js.Stream(e.t.Context(), bus.StreamRuns)
	require.NoError(e.t, err)
	info, err := runs.Info(e.t.Context())
	require.NoError(e.t, err)
	now := info.State.LastTime.Add(cfg.RunTimeout + time.Nanosecond)
	return func() time.Time { return now }
}
