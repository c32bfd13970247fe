package planner

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// requests hands out build requests one at a time, as a builder would.
type requests struct {
	e    *env
	cons jetstream.Consumer
}

func (e *env) requests() *requests {
	e.t.Helper()
	cons, err := e.js.CreateOrUpdateConsumer(e.t.Context(), bus.StreamBuilds, jetstream.ConsumerConfig{
		Durable: "test-restart", FilterSubject: bus.BuildAll, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(e.t, err)
	return &requests{e: e, cons: cons}
}

func (q *requests) next() *nixbuspb.BuildRequest {
	q.e.t.Helper()
	m, err := q.cons.Next(jetstream.FetchMaxWait(20 * time.Second))
	require.NoError(q.e.t, err, "no build request")
	require.NoError(q.e.t, m.Ack())
	var req nixbuspb.BuildRequest
	require.NoError(q.e.t, bus.Decode(m.Data(), &req))
	return &req
}

func (q *requests) answer(req *nixbuspb.BuildRequest, st nixbuspb.BuildStatus) {
	res := &nixbuspb.BuildResult{RunId: req.GetRunId(), DrvPath: req.GetDrvPath(), System: req.GetSystem(), Status: st,
		Attrs: req.GetAttrs(), RestartSeq: req.GetRestartSeq()}
	q.e.publish(bus.RunSubject(req.GetRunId(), bus.RunResultKind), bus.MsgIDRebuildResult(req.GetRunId(), req.GetDrvPath(), req.GetRestartSeq()), res)
}

func (e *env) restartJob(run, drv string, at int64) uint64 {
	e.t.Helper()
	msg, err := bus.NewMsg(bus.RunSubject(run, bus.RunRestartKind), bus.MsgIDRestart(run, drv, at),
		&nixbuspb.RestartJob{RunId: run, DrvPath: drv, RequestedBy: "alice", RequestedUnixMs: at}, nil)
	require.NoError(e.t, err)
	ack, err := e.js.PublishMsg(e.t.Context(), msg)
	require.NoError(e.t, err)
	return ack.Sequence
}

// A failed job of an ended run is built again on request, once; jobs that
// did not fail, unknown jobs and jobs of running runs are not. The run's
// verdict is derived again once the rebuild is done.
func TestPlannerRestartJob(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	q := e.requests()
	const (
		ok     = "/nix/store/00000000000000000000000000000001-ok.drv"
		broken = "/nix/store/00000000000000000000000000000002-broken.drv"
		later  = "/nix/store/00000000000000000000000000000003-later.drv"
		last   = "/nix/store/00000000000000000000000000000004-last.drv"
	)
	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 1, Patchset: 1})
	e.job("r1", &nixbuspb.Job{Attr: "ok", DrvPath: ok, System: "x86_64-linux"})
	e.job("r1", &nixbuspb.Job{Attr: "broken", DrvPath: broken, System: "x86_64-linux", Outputs: map[string]string{"out": "/nix/store/x-broken"}})
	e.evalDone("r1", 2, "")
	for range 2 {
		req := q.next()
		st := nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
		if req.GetDrvPath() == broken {
			st = nixbuspb.BuildStatus_BUILD_STATUS_FAILED
		}
		require.Zero(t, req.GetRestartSeq())
		q.answer(req, st)
	}
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, e.verdict("r1").GetStatus())

	e.restartJob("r1", ok, 1)                         // succeeded: no rebuild
	e.restartJob("r1", "/nix/store/0-unknown.drv", 2) // no such job
	seq := e.restartJob("r1", broken, 3)              // rebuilt
	e.restartJob("r1", broken, 3)                     // the same request again: one rebuild
	req := q.next()
	require.Equal(t, broken, req.GetDrvPath())
	require.Equal(t, seq, req.GetRestartSeq())
	require.Equal(t, []string{"broken"}, req.GetAttrs())
	require.Equal(t, "/nix/store/x-broken", req.GetOutputs()["out"])
	q.answer(req, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED)
	e.restartJob("r1", broken, 4) // its rebuild succeeded: nothing to do

	// A run still running: its jobs are not restarted.
	e.startRun("r2", &nixbuspb.ChangeEvent{Project: "p", Change: 2, Patchset: 1})
	e.job("r2", &nixbuspb.Job{Attr: "later", DrvPath: later, System: "x86_64-linux"})
	e.evalDone("r2", 1, "")
	req = q.next()
	require.Equal(t, later, req.GetDrvPath())
	e.restartJob("r2", later, 5) // still running (its result is not in)
	q.answer(req, nixbuspb.BuildStatus_BUILD_STATUS_FAILED)
	e.verdict("r2")
	// The planner reads the stream in order: once r3's build is released,
	// every restart above was handled.
	e.startRun("r3", &nixbuspb.ChangeEvent{Project: "p", Change: 3, Patchset: 1})
	e.job("r3", &nixbuspb.Job{Attr: "last", DrvPath: last, System: "x86_64-linux"})
	e.evalDone("r3", 1, "")
	req = q.next()
	require.Equal(t, last, req.GetDrvPath(), "no other rebuild was released")
	v := e.verdictRevision("r1", seq)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, v.GetStatus(), "the rebuild succeeded: the run did")
	require.Equal(t, 2, count(t, e.js, bus.StreamReports, bus.VerdictSubject("r1")))
}

// A restarted job's rebuild that succeeds releases what its failure had
// skipped, and once that is built the run gets a second verdict, of the
// restart's revision. A planner restarted meanwhile reads the restart
// again and publishes nothing twice.
func TestPlannerRestartRederivesRun(t *testing.T) {
	e := newEnv(t)
	stop := e.startPlanner(testConfig())
	q := e.requests()
	const (
		x     = "/nix/store/00000000000000000000000000000001-x.drv"
		y     = "/nix/store/00000000000000000000000000000002-y.drv"
		fine  = "/nix/store/00000000000000000000000000000003-fine.drv"
		other = "/nix/store/00000000000000000000000000000004-other.drv"
	)
	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 1, Patchset: 1})
	e.job("r1", &nixbuspb.Job{Attr: "x", DrvPath: x, System: "x86_64-linux"})
	e.job("r1", &nixbuspb.Job{Attr: "y", DrvPath: y, System: "x86_64-linux", DependsOn: []string{x}})
	e.job("r1", &nixbuspb.Job{Attr: "fine", DrvPath: fine, System: "x86_64-linux"})
	e.evalDone("r1", 3, "")
	for range 2 {
		req := q.next()
		st := nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
		if req.GetDrvPath() == x {
			st = nixbuspb.BuildStatus_BUILD_STATUS_FAILED
		}
		q.answer(req, st)
	}
	v := e.verdict("r1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Zero(t, v.GetRevision())
	require.Len(t, v.GetFailed(), 2)
	require.Equal(t, "dependency x failed", v.GetFailed()[1].GetReason())

	seq := e.restartJob("r1", x, 1)
	req := q.next()
	require.Equal(t, x, req.GetDrvPath())
	require.Equal(t, seq, req.GetRestartSeq())
	stop()
	e.startPlanner(testConfig())
	q.answer(req, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED)
	req = q.next()
	require.Equal(t, y, req.GetDrvPath(), "what x's failure skipped is built once x is")
	require.Equal(t, seq, req.GetRestartSeq())
	require.Equal(t, []string{"y"}, req.GetAttrs())
	q.answer(req, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED)

	v = e.verdictRevision("r1", seq)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, v.GetStatus())
	require.Empty(t, v.GetFailed())
	require.Equal(t, []int64{3, 3, 0, 0}, []int64{v.GetJobCount(), v.GetSucceededCount(), v.GetFailedCount(), v.GetSkippedCount()})
	last := map[string]nixbuspb.JobStatus{}
	outcomes := natstest.Read[nixbuspb.JobOutcome](t, e.js, bus.StreamReports, bus.OutcomeSubject("r1"))
	for _, o := range outcomes {
		last[o.GetAttr()] = o.GetStatus()
	}
	require.Len(t, outcomes, 5, "x and y decided twice, fine once")
	require.Equal(t, map[string]nixbuspb.JobStatus{"x": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED,
		"y": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, "fine": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED}, last)

	// Nothing else was released: the next request is a new run's.
	e.startRun("r2", &nixbuspb.ChangeEvent{Project: "p", Change: 2, Patchset: 1})
	e.job("r2", &nixbuspb.Job{Attr: "other", DrvPath: other, System: "x86_64-linux"})
	e.evalDone("r2", 1, "")
	require.Equal(t, other, q.next().GetDrvPath())
	require.Equal(t, 2, count(t, e.js, bus.StreamReports, bus.VerdictSubject("r1")))
}

// Two failed jobs restarted one after the other are one reopening: the
// verdict waits for both rebuilds and is of the later restart's revision.
// A rebuild that fails again leaves its dependents skipped, now naming it;
// the run gets its verdict of that revision all the same (whoever watches
// sees the restart end), and the reporter decides whether it is news.
func TestPlannerRestartFailsAgain(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	q := e.requests()
	const (
		a = "/nix/store/00000000000000000000000000000001-a.drv"
		b = "/nix/store/00000000000000000000000000000002-b.drv"
		c = "/nix/store/00000000000000000000000000000003-c.drv"
	)
	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 1, Patchset: 1})
	e.job("r1", &nixbuspb.Job{Attr: "a", DrvPath: a, System: "x86_64-linux"})
	e.job("r1", &nixbuspb.Job{Attr: "b", DrvPath: b, System: "x86_64-linux"})
	e.job("r1", &nixbuspb.Job{Attr: "c", DrvPath: c, System: "x86_64-linux", DependsOn: []string{a, b}})
	e.evalDone("r1", 3, "")
	reqs := map[string]*nixbuspb.BuildRequest{}
	for range 2 {
		req := q.next()
		reqs[req.GetDrvPath()] = req
	}
	q.answer(reqs[a], nixbuspb.BuildStatus_BUILD_STATUS_FAILED) // c: dependency a failed
	q.answer(reqs[b], nixbuspb.BuildStatus_BUILD_STATUS_FAILED)
	v := e.verdict("r1")
	require.Equal(t, []int64{2, 1}, []int64{v.GetFailedCount(), v.GetSkippedCount()})

	seqA := e.restartJob("r1", a, 1)
	ra := q.next()
	seqB := e.restartJob("r1", b, 2)
	rb := q.next()
	require.Equal(t, []uint64{seqA, seqB}, []uint64{ra.GetRestartSeq(), rb.GetRestartSeq()})
	q.answer(ra, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED)
	q.answer(rb, nixbuspb.BuildStatus_BUILD_STATUS_FAILED)

	v = e.verdictRevision("r1", seqB)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Equal(t, []int64{1, 1, 1}, []int64{v.GetSucceededCount(), v.GetFailedCount(), v.GetSkippedCount()})
	var listed []string
	for _, o := range v.GetFailed() {
		listed = append(listed, o.GetAttr()+": "+o.GetReason())
	}
	require.ElementsMatch(t, []string{"b: build failed", "c: dependency b failed"}, listed)
	require.Equal(t, 2, count(t, e.js, bus.StreamReports, bus.VerdictSubject("r1")))
}

// TestPlannerRestartKeepsNoBuilderFailure: a run restored for a restart
// keeps the failures the planner decided for want of a builder as they
// were published: its new verdict names them as before.
func TestPlannerRestartKeepsNoBuilderFailure(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.NoBuilderTimeout = 10 * time.Minute
	reg, c := e.startPlannerHearing(cfg, x86)
	q := e.requests()

	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 3, Patchset: 1})
	e.job("r1", &nixbuspb.Job{Attr: "x", DrvPath: drv("x"), System: x86})
	e.job("r1", &nixbuspb.Job{Attr: "arm", DrvPath: drv("arm"), System: arm})
	e.evalDone("r1", 2, "")
	for range 2 {
		if req := q.next(); req.GetDrvPath() == drv("x") {
			q.answerWith(req, clone(failedExit1))
		}
	}
	c.add(6 * time.Minute)
	e.alive(reg, c, x86)
	c.add(6 * time.Minute)
	require.EqualValues(t, 2, e.verdict("r1").GetFailedCount())

	seq := e.restartJob("r1", drv("x"), 1)
	req := q.next()
	require.Equal(t, drv("x"), req.GetDrvPath())
	q.answerWith(req, &nixbuspb.BuildResult{Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
	v := e.verdictRevision("r1", seq)
	require.Len(t, v.GetFailed(), 1)
	require.Equal(t, "arm", v.GetFailed()[0].GetAttr())
	require.Equal(t, "no builder for system aarch64-linux: none seen for 10m0s", v.GetFailed()[0].GetReason())
}
