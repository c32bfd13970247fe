package planner

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

const (
	x86 = "x86_64-linux"
	arm = "aarch64-linux"
)

func drv(name string) string { return "/nix/store/" + strings.Repeat("0", 32) + "-" + name + ".drv" }

func TestPlannerRun(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	b := e.startBuilder(func(r *nixbuspb.BuildRequest) nixbuspb.BuildStatus {
		if r.GetDrvPath() == drv("broken") {
			return nixbuspb.BuildStatus_BUILD_STATUS_FAILED
		}
		return nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
	})

	const run = "r1"
	change := &nixbuspb.ChangeEvent{EventId: "e1", Project: "p", Change: 42, Patchset: 3}
	e.startRun(run, change)
	jobs := []*nixbuspb.Job{
		{Attr: "chain1", DrvPath: drv("chain1"), System: x86, Outputs: map[string]string{"out": "/nix/store/o-chain1"}},
		{Attr: "alias.chain1", DrvPath: drv("chain1"), System: x86},
		{Attr: "chain2", DrvPath: drv("chain2"), System: x86, DependsOn: []string{drv("chain1")}},
		{Attr: "chain3", DrvPath: drv("chain3"), System: x86, DependsOn: []string{drv("chain2"), "/nix/store/not-a-job.drv"}},
		{Attr: "broken", DrvPath: drv("broken"), System: x86},
		{Attr: "after-broken", DrvPath: drv("after-broken"), System: x86, DependsOn: []string{drv("broken")}},
		{Attr: "cached-after-broken", DrvPath: drv("cab"), System: x86, Cached: true, DependsOn: []string{drv("after-broken")}},
		{Attr: "cached", DrvPath: drv("cached"), System: x86, Cached: true, DependsOn: []string{drv("chain1")}},
		{Attr: "arm", DrvPath: drv("arm"), System: arm},
		{Attr: "eval-error", EvalError: "error: this job does not evaluate"},
	}
	for _, j := range jobs {
		e.job(run, j)
	}
	e.evalDone(run, len(jobs), "")

	v := e.verdict(run)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Equal(t, change.GetChange(), v.GetChange().GetChange())
	require.Equal(t, int64(len(jobs)), v.GetJobCount())
	require.Equal(t, int64(5), v.GetSucceededCount()) // chain1 (twice), chain2, chain3, arm
	require.Equal(t, int64(2), v.GetFailedCount())    // broken, eval-error
	require.Equal(t, int64(2), v.GetSkippedCount())
	require.Equal(t, int64(1), v.GetCachedCount())
	var listed []string
	for _, o := range v.GetFailed() {
		listed = append(listed, o.GetAttr())
	}
	require.ElementsMatch(t, []string{"eval-error", "broken", "after-broken", "cached-after-broken"}, listed)

	got := e.outcomes(run)
	require.Len(t, got, len(jobs))
	for attr, want := range map[string]struct {
		status  nixbuspb.JobStatus
		failure nixbuspb.FailureKind
		reason  string
	}{
		"chain1":              {nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, 0, ""},
		"alias.chain1":        {nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, 0, ""},
		"chain3":              {nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, 0, ""},
		"arm":                 {nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, 0, ""},
		"broken":              {nixbuspb.JobStatus_JOB_STATUS_FAILED, nixbuspb.FailureKind_FAILURE_KIND_BUILD, "failed with exit code 1"},
		"after-broken":        {nixbuspb.JobStatus_JOB_STATUS_SKIPPED, nixbuspb.FailureKind_FAILURE_KIND_DEPENDENCY, "dependency broken failed"},
		"cached-after-broken": {nixbuspb.JobStatus_JOB_STATUS_SKIPPED, nixbuspb.FailureKind_FAILURE_KIND_DEPENDENCY, "dependency broken failed"},
		"cached":              {nixbuspb.JobStatus_JOB_STATUS_CACHED, 0, ""},
		"eval-error":          {nixbuspb.JobStatus_JOB_STATUS_FAILED, nixbuspb.FailureKind_FAILURE_KIND_EVAL, "this job does not evaluate"},
	} {
		require.Equal(t, want.status, got[attr].GetStatus(), attr)
		require.Equal(t, want.failure, got[attr].GetFailure(), attr)
		require.Contains(t, got[attr].GetReason(), want.reason, attr)
	}
	require.Equal(t, bus.LogKey(run, drv("broken")), got["broken"].GetLogKey())
	require.Equal(t, bus.LogKey(run, drv("chain1")), got["alias.chain1"].GetLogKey())
	// A skipped job links the log of the failure that skipped it, however
	// far down the chain.
	require.Equal(t, bus.LogKey(run, drv("broken")), got["after-broken"].GetLogKey())
	require.Equal(t, bus.LogKey(run, drv("broken")), got["cached-after-broken"].GetLogKey())
	require.Empty(t, got["eval-error"].GetLogKey())

	// Every derivation was requested once, on its system's subject; cached
	// and skipped ones never.
	require.Equal(t, map[string]int{
		run + "/" + drv("chain1"): 1, run + "/" + drv("chain2"): 1, run + "/" + drv("chain3"): 1,
		run + "/" + drv("broken"): 1, run + "/" + drv("arm"): 1,
	}, b.counts())
	b.mu.Lock()
	require.Equal(t, bus.BuildSubject(arm), b.systems[drv("arm")])
	require.Equal(t, bus.BuildSubject(x86), b.systems[drv("chain1")])
	b.mu.Unlock()
	require.Zero(t, count(t, e.js, bus.StreamBuilds, bus.BuildSubject(x86)), "the builder acked every request")

	// A redelivered or duplicate result changes nothing.
	e.publish(bus.RunSubject(run, bus.RunResultKind), "again", &nixbuspb.BuildResult{RunId: run, DrvPath: drv("broken"),
		Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
	e.startRun("r-next", nil)
	e.evalDone("r-next", 0, "")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("r-next").GetStatus())
	require.Len(t, e.outcomes(run), len(jobs))
	require.Len(t, natstest.Read[nixbuspb.RunVerdict](t, e.js, bus.StreamReports, bus.VerdictSubject(run)), 1)
}

func TestPlannerEvalError(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 1, Patchset: 1})
	e.evalDone("r1", 0, "error: flake has no hydraJobs")
	v := e.verdict("r1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Equal(t, "error: flake has no hydraJobs", v.GetEvalError())
}

func TestPlannerWaitsForLateJobs(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	e.startBuilder(succeedAll)
	e.startRun("r1", nil)
	e.job("r1", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
	e.evalDone("r1", 2, "")
	e.job("r1", &nixbuspb.Job{Attr: "b", DrvPath: drv("b"), System: x86, DependsOn: []string{drv("a")}})
	v := e.verdict("r1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, v.GetStatus())
	require.Equal(t, int64(2), v.GetSucceededCount())
}

// The evaluator publishes the derivation graph between the jobs in chunks:
// jobs wait through derivations that are not jobs, a failure skips through
// them naming the failed job, and planning waits for every chunk EvalDone
// counts, however late and however often one comes.
func TestPlannerOrdersByGraphChunks(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	b := e.startBuilder(func(r *nixbuspb.BuildRequest) nixbuspb.BuildStatus {
		if r.GetDrvPath() == drv("a") {
			return nixbuspb.BuildStatus_BUILD_STATUS_FAILED
		}
		return nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
	})
	e.startRun("r1", nil)
	for _, a := range []string{"top", "a", "b", "c", "d"} {
		e.job("r1", &nixbuspb.Job{Attr: a, DrvPath: drv(a), System: x86})
	}
	// top -> h1 -> {h2 -> a, b}; d -> h3 -> c.
	drvs := []string{drv("top"), drv("a"), drv("b"), drv("c"), drv("d"), drv("h1"), drv("h2"), drv("h3")}
	edges := []int32{5, 6, 6, 1, 5, 2, 4, 7, 7, 3, 0, 5}
	chunks := bus.GraphChunks("r1", drvs, edges, 100)
	require.Greater(t, len(chunks), 3)
	last := chunks[len(chunks)-1]
	require.Equal(t, []int32{0, 5}, last.GetEdges()[len(last.GetEdges())-2:], "top's own edge comes last")
	for _, c := range chunks[:len(chunks)-1] {
		e.publish(bus.RunSubject("r1", bus.RunGraphKind), bus.MsgIDGraph("r1", c.GetIndex()), c)
	}
	// A repeat (another id) does not count as the missing chunk.
	e.publish(bus.RunSubject("r1", bus.RunGraphKind), "again", chunks[0])
	done := &nixbuspb.EvalDone{RunId: "r1", JobCount: 5, GraphChunks: int32(len(chunks))}
	e.publish(bus.RunSubject("r1", bus.RunEvalKind), bus.MsgIDEvalDone("r1"), done)
	e.publish(bus.RunSubject("r1", bus.RunGraphKind), bus.MsgIDGraph("r1", last.GetIndex()), last)

	v := e.verdict("r1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	got := e.outcomes("r1")
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_FAILED, got["a"].GetStatus())
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_SKIPPED, got["top"].GetStatus())
	require.Equal(t, "dependency a failed", got["top"].GetReason())
	for _, a := range []string{"b", "c", "d"} {
		require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, got[a].GetStatus(), a)
	}
	require.Zero(t, b.counts()["r1/"+drv("top")], "top is never built")
	require.Equal(t, 1, b.counts()["r1/"+drv("d")])
}

func TestPlannerSupersede(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	ch := func(ps int32) *nixbuspb.ChangeEvent {
		return &nixbuspb.ChangeEvent{Project: "nixpkgs", Change: 7, Patchset: ps}
	}
	// Patchset 1 is evaluating; patchset 2 supersedes it.
	e.startRun("ps1", ch(1))
	e.job("ps1", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
	e.startRun("ps2", ch(2))
	v := e.verdict("ps1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_CANCELLED, v.GetStatus())
	require.Equal(t, "ps2", v.GetSupersededBy())
	cancels := natstest.Read[nixbuspb.Cancel](t, e.js, bus.StreamRuns, bus.RunSubject("ps1", bus.RunCancelKind))
	require.Len(t, cancels, 1)
	require.Equal(t, "ps2", cancels[0].GetSupersededBy())

	// The superseded run's late messages change nothing: the evaluator
	// streams jobs while it evaluates, so more can come after the cancel.
	e.job("ps1", &nixbuspb.Job{Attr: "b", DrvPath: drv("b"), System: x86})
	e.evalDone("ps1", 2, "")

	// A late run of an older patchset is cancelled at once.
	e.startRun("ps1-late", ch(1))
	v = e.verdict("ps1-late")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_CANCELLED, v.GetStatus())
	require.Equal(t, "ps2", v.GetSupersededBy())

	// Another change, and changes without a number, are left alone.
	e.startRun("other", &nixbuspb.ChangeEvent{Project: "nixpkgs", Change: 8, Patchset: 1})
	e.startRun("manual1", &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_MANUAL})
	e.startRun("manual2", &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_MANUAL})
	for _, r := range []string{"ps2", "other", "manual1", "manual2"} {
		e.evalDone(r, 0, "")
		require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict(r).GetStatus(), r)
	}
	require.Len(t, natstest.Read[nixbuspb.RunVerdict](t, e.js, bus.StreamReports, bus.VerdictSubject("ps1")), 1)
	require.Zero(t, count(t, e.js, bus.StreamBuilds, bus.BuildSubject(x86)), "nothing of ps1 is built")
}

// TestPlannerSupersedeAfterRestart: the newest run of a change is durable,
// so a late run of an older patchset is cancelled even when the newer one
// finished before a planner restart; and a recheck of the same patchset
// supersedes the run it repeats.
func TestPlannerSupersedeAfterRestart(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	stop := e.startPlanner(cfg)
	ch := func(ps int32) *nixbuspb.ChangeEvent {
		return &nixbuspb.ChangeEvent{Project: "lix/lix", Change: 9, Patchset: ps}
	}
	e.startRun("ps2", ch(2))
	e.evalDone("ps2", 0, "")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("ps2").GetStatus())
	// Wait until a restart would not read ps2 again.
	kv, err := e.js.KeyValue(t.Context(), Bucket)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cp, err := loadCheckpoint(t.Context(), kv)
		return err == nil && cp > 2
	}, 10*time.Second, 10*time.Millisecond)
	stop()

	e.startPlanner(cfg)
	e.startRun("ps1-late", ch(1))
	v := e.verdict("ps1-late")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_CANCELLED, v.GetStatus())
	require.Equal(t, "ps2", v.GetSupersededBy())

	// A recheck of patchset 2 while its first recheck evaluates.
	e.startRun("recheck1", ch(2))
	e.job("recheck1", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
	e.startRun("recheck2", ch(2))
	v = e.verdict("recheck1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_CANCELLED, v.GetStatus())
	require.Equal(t, "recheck2", v.GetSupersededBy())
	cancels := natstest.Read[nixbuspb.Cancel](t, e.js, bus.StreamRuns, bus.RunSubject("recheck1", bus.RunCancelKind))
	require.Len(t, cancels, 1)
	require.Equal(t, "superseded by a later run of patchset 2", cancels[0].GetReason())
	e.evalDone("recheck2", 0, "")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("recheck2").GetStatus())
}

func TestChangeRunEncoding(t *testing.T) {
	c := changeRun{patchset: 3, seq: 1234, run: "gerrit-patchset-0af3"}
	got, err := decodeChangeRun(c.encode())
	require.NoError(t, err)
	require.Equal(t, c, got)
	for _, bad := range []string{"", "3", "3 x r", "x 1 r", "3 1"} {
		_, err := decodeChangeRun([]byte(bad))
		require.Error(t, err, bad)
	}
	require.True(t, changeRun{patchset: 2, seq: 1}.newerThan(changeRun{patchset: 1, seq: 9}))
	require.True(t, changeRun{patchset: 2, seq: 9}.newerThan(changeRun{patchset: 2, seq: 1}))
	require.False(t, changeRun{patchset: 1, seq: 9}.newerThan(changeRun{patchset: 2, seq: 1}))
	// Project names KV keys could not hold still give valid keys.
	require.Regexp(t, `^change\.[0-9a-f]{16}\.42$`, changeKVKey(changeKey{"a b/c*>", 42}))
}

func TestPlannerCancel(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	// No builder: the first job stays building.
	e.startRun("r1", nil)
	e.job("r1", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
	e.job("r1", &nixbuspb.Job{Attr: "b", DrvPath: drv("b"), System: x86, DependsOn: []string{drv("a")}})
	e.evalDone("r1", 2, "")
	require.Eventually(t, func() bool {
		return e.stored(bus.StreamBuilds, bus.BuildSubject(x86)) == 1
	}, 10*time.Second, 10*time.Millisecond)
	e.publish(bus.RunSubject("r1", bus.RunCancelKind), bus.MsgIDCancel("r1"), &nixbuspb.Cancel{RunId: "r1", Reason: "operator"})
	v := e.verdict("r1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_CANCELLED, v.GetStatus())
	// A result after the cancel releases nothing.
	e.publish(bus.RunSubject("r1", bus.RunResultKind), bus.MsgIDResult("r1", drv("a")),
		&nixbuspb.BuildResult{RunId: "r1", DrvPath: drv("a"), Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED})
	e.startRun("r2", nil)
	e.evalDone("r2", 0, "")
	e.verdict("r2")
	require.Equal(t, 1, count(t, e.js, bus.StreamBuilds, bus.BuildSubject(x86)))
	require.Empty(t, e.outcomes("r1"))
}

// TestPlannerRestart stops the planner in the middle of a run while the
// builder keeps working, starts a new one on the same NATS, and checks the
// run finishes with every outcome exactly once and the right verdict.
func TestPlannerRestart(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	stop := e.startPlanner(cfg)

	// A finished run first, so the checkpoint moves past it.
	e.startRun("done", nil)
	e.evalDone("done", 0, "")
	e.verdict("done")

	// A chain of 40 with a fan of 3 at each step, and one failure.
	const run = "r1"
	e.startRun(run, nil)
	var jobs []*nixbuspb.Job
	for i := range 40 {
		dep := []string{}
		if i > 0 {
			dep = append(dep, drv(fmt.Sprintf("c%d", i-1)))
		}
		jobs = append(jobs, &nixbuspb.Job{Attr: fmt.Sprintf("c%d", i), DrvPath: drv(fmt.Sprintf("c%d", i)), System: x86, DependsOn: dep})
		for k := range 3 {
			jobs = append(jobs, &nixbuspb.Job{Attr: fmt.Sprintf("f%d-%d", i, k), DrvPath: drv(fmt.Sprintf("f%d-%d", i, k)), System: x86,
				DependsOn: []string{drv(fmt.Sprintf("c%d", i))}})
		}
	}
	for _, j := range jobs {
		e.job(run, j)
	}
	e.evalDone(run, len(jobs), "")
	// c20 is held until the planner is stopped, so that the run is half
	// done then however fast the rest goes; its result lands while the
	// planner is down.
	hold := make(chan struct{})
	b := e.startBuilder(func(r *nixbuspb.BuildRequest) nixbuspb.BuildStatus {
		switch r.GetDrvPath() {
		case drv("c20"):
			select {
			case <-hold:
			case <-t.Context().Done():
			}
		case drv("f30-1"):
			return nixbuspb.BuildStatus_BUILD_STATUS_FAILED
		}
		return nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
	})

	// Stop once part of the run is done.
	require.Eventually(t, func() bool { return e.stored(bus.StreamReports, bus.OutcomeSubject(run)) >= 40 }, 20*time.Second, 5*time.Millisecond)
	stop()
	close(hold)
	kv, err := e.js.KeyValue(t.Context(), Bucket)
	require.NoError(t, err)
	cp, err := loadCheckpoint(t.Context(), kv)
	require.NoError(t, err)
	require.Greater(t, cp, uint64(2), "the checkpoint moved past the finished run")
	partial := len(e.outcomes(run))
	require.Less(t, partial, len(jobs))

	e.startPlanner(cfg)
	v := e.verdict(run)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Equal(t, int64(len(jobs)-1), v.GetSucceededCount())
	require.Equal(t, int64(1), v.GetFailedCount())
	require.Zero(t, v.GetSkippedCount())
	got := e.outcomes(run)
	require.Len(t, got, len(jobs))
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_FAILED, got["f30-1"].GetStatus())
	require.Len(t, natstest.Read[nixbuspb.RunVerdict](t, e.js, bus.StreamReports, bus.VerdictSubject(run)), 1)
	for k, n := range b.counts() {
		require.Equal(t, 1, n, "%s requested %d times", k, n)
	}
	require.Len(t, b.counts(), len(jobs))
}

func TestPlannerCheckpointBeyondStream(t *testing.T) {
	e := newEnv(t)
	// A checkpoint from a runs stream that has since been recreated.
	kv, err := e.js.KeyValue(t.Context(), Bucket)
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), checkpointKey, []byte("100000"))
	require.NoError(t, err)
	e.startRun("r1", nil)
	e.evalDone("r1", 0, "")
	e.startPlanner(testConfig())
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("r1").GetStatus())
}

// TestPlannerRunsDoNotWaitForEachOther holds one run's planning and shows
// that other runs go on meanwhile, that a run cancelled while planning is
// dropped, and that results read while planning (as on a replay) are
// applied once the plan is in: a derivation whose result is already known
// is not released again.
func TestPlannerRunsDoNotWaitForEachOther(t *testing.T) {
	e := newEnv(t)
	_, js := e.srv.Connect(t)
	reg := prometheus.NewRegistry()
	p, err := New(testConfig(), Deps{JS: js, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	require.NoError(t, err)
	gate := make(chan struct{})
	p.beforePlan = func(ctx context.Context, run string) {
		if run == "held" || run == "held-ps1" {
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	b := e.startBuilder(succeedAll)

	// held: a is built already (its result is on the stream, as after a
	// restart), b waits for a, c waits for nothing.
	e.startRun("held", nil)
	e.job("held", &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: x86})
	e.job("held", &nixbuspb.Job{Attr: "b", DrvPath: drv("b"), System: x86, DependsOn: []string{drv("a")}})
	e.job("held", &nixbuspb.Job{Attr: "c", DrvPath: drv("c"), System: x86})
	e.evalDone("held", 3, "")
	e.publish(bus.RunSubject("held", bus.RunResultKind), bus.MsgIDResult("held", drv("a")),
		&nixbuspb.BuildResult{RunId: "held", DrvPath: drv("a"), System: x86, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, LogKey: "held/a"})

	// held-ps1: superseded by its patchset 2 while its plan is held.
	change := func(ps int32) *nixbuspb.ChangeEvent {
		return &nixbuspb.ChangeEvent{Project: "p", Change: 7, Patchset: ps}
	}
	e.startRun("held-ps1", change(1))
	e.job("held-ps1", &nixbuspb.Job{Attr: "x", DrvPath: drv("x1"), System: x86})
	e.evalDone("held-ps1", 1, "")

	// Meanwhile other runs finish.
	e.startRun("free", nil)
	e.job("free", &nixbuspb.Job{Attr: "d", DrvPath: drv("d"), System: x86})
	e.job("free", &nixbuspb.Job{Attr: "e", DrvPath: drv("e"), System: x86, DependsOn: []string{drv("d")}})
	e.evalDone("free", 2, "")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("free").GetStatus())
	e.startRun("held-ps2", change(2))
	e.job("held-ps2", &nixbuspb.Job{Attr: "x", DrvPath: drv("x2"), System: x86})
	e.evalDone("held-ps2", 1, "")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, e.verdict("held-ps2").GetStatus())
	v := e.verdict("held-ps1")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_CANCELLED, v.GetStatus())
	require.Equal(t, "held-ps2", v.GetSupersededBy())
	require.Equal(t, 1.0, gauge(t, reg, "nixbus_planner_active_runs"), "only the held run is left")

	close(gate)
	v = e.verdict("held")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, v.GetStatus())
	require.Equal(t, int64(3), v.GetSucceededCount())
	got := e.outcomes("held")
	require.Len(t, got, 3)
	require.Equal(t, "held/a", got["a"].GetLogKey(), "a's outcome comes from its replayed result")
	require.Eventually(t, func() bool {
		v, err := tryGauge(reg, "nixbus_planner_active_runs")
		return err == nil && v == 0
	}, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, map[string]int{
		"held/" + drv("b"): 1, "held/" + drv("c"): 1, "free/" + drv("d"): 1, "free/" + drv("e"): 1, "held-ps2/" + drv("x2"): 1,
	}, b.counts(), "a is not released again; the cancelled run releases nothing")
	require.Empty(t, e.outcomes("held-ps1"))
}
