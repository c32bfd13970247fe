package web

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func storeDrv(name string) string {
	return "/nix/store/" + strings.Repeat("c", 32) + "-" + name + ".drv"
}

// graphRun publishes a run's jobs (attr -> its own DependsOn, the way
// older evaluators said it) and its derivation graph as GraphChunks
// (pairs: the first waits for the second), then EvalDone.
func (f *fixture) graphRun(t *testing.T, run string, jobs []string, dependsOn map[string][]string, graph [][2]string) {
	t.Helper()
	ctx := t.Context()
	require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run),
		&nixbuspb.RunStarted{RunId: run, Change: &nixbuspb.ChangeEvent{Project: "graph"}, StartedUnixMs: 3}, nil))
	for _, a := range jobs {
		j := &nixbuspb.Job{RunId: run, Attr: a, DrvPath: storeDrv(a), System: "x86_64-linux"}
		for _, d := range dependsOn[a] {
			j.DependsOn = append(j.DependsOn, storeDrv(d))
		}
		require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, a), j, nil))
	}
	num := map[string]int32{}
	var drvs []string
	var edges []int32
	for _, e := range graph {
		for _, d := range e {
			if _, ok := num[d]; !ok {
				num[d] = int32(len(drvs))
				drvs = append(drvs, storeDrv(d))
			}
		}
		edges = append(edges, num[e[0]], num[e[1]])
	}
	chunks := bus.GraphChunks(run, drvs, edges, 64) // several small chunks
	for _, c := range chunks {
		require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunGraphKind), bus.MsgIDGraph(run, c.GetIndex()), c, nil))
	}
	require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunEvalKind), bus.MsgIDEvalDone(run),
		&nixbuspb.EvalDone{RunId: run, JobCount: int64(len(jobs)), GraphChunks: int32(len(chunks))}, nil))
}

// criticalSection is the critical path section of a run page: the
// attributes it lists, in order, and its text.
func criticalSection(t *testing.T, body string) ([]string, string) {
	t.Helper()
	start := strings.Index(body, `<section id="critical-path"`)
	require.GreaterOrEqual(t, start, 0, "no critical path in\n%s", body)
	sec := body[start : start+strings.Index(body[start:], "</section>")]
	var attrs []string
	for _, li := range strings.Split(sec, "<li>")[1:] {
		a := li[strings.Index(li, `">`)+2 : strings.Index(li, "</a>")]
		attrs = append(attrs, a)
	}
	return attrs, sec
}

// A finished run's critical path is the chain whose build times add up to
// the most, found through a derivation that is not a job (helper) and an
// edge only an old run's DependsOn gives (d2 -> d1).
func TestCriticalPathOfFinishedRun(t *testing.T) {
	f := start(t, testConfig())
	const run = "rcrit"
	durations := map[string]int64{"a": 1000, "b": 3000, "c": 500, "d1": 2000, "d2": 2500, "e": 5000, "f": 100, "cached": 0}
	jobs := []string{"a", "b", "c", "d1", "d2", "e", "f", "cached"}
	f.graphRun(t, run, jobs, map[string][]string{"d2": {"d1"}}, [][2]string{
		{"b", "a"}, {"c", "b"}, // a b c: 4.5 s
		{"e", "helper"}, {"helper", "a"}, // e waits for a through helper
		{"f", "e"}, {"f", "d2"}, {"f", "cached"}, // a e f: 6.1 s; d1 d2 f: 4.6 s
	})
	for _, a := range jobs {
		st := nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED
		if a == "cached" {
			st = nixbuspb.JobStatus_JOB_STATUS_CACHED
		}
		o := &nixbuspb.JobOutcome{RunId: run, Attr: a, DrvPath: storeDrv(a), Status: st, DurationMs: durations[a]}
		require.NoError(t, f.pub.Publish(t.Context(), bus.OutcomeSubject(run), bus.MsgIDOutcome(run, a), o, nil))
	}
	require.NoError(t, f.pub.Publish(t.Context(), bus.VerdictSubject(run), bus.MsgIDVerdict(run),
		&nixbuspb.RunVerdict{RunId: run, Status: nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, JobCount: int64(len(jobs))}, nil))

	code, body := get(t, http.DefaultClient, f.srv.URL+"/runs/"+run)
	require.Equal(t, http.StatusOK, code)
	attrs, sec := criticalSection(t, body)
	require.Equal(t, []string{"a", "e", "f"}, attrs, sec)
	require.Contains(t, sec, "Critical path")
	require.Contains(t, sec, "6.1s")
	require.Contains(t, sec, `href="/runs/rcrit/jobs/`+bus.DrvBase(storeDrv("e"))+`"`)
}

// A running run shows the longest chain of jobs not yet done, starting
// with what builds now (done jobs are not in it), and what each waits on.
func TestCriticalPathOfRunningRun(t *testing.T) {
	f := start(t, testConfig())
	const run = "rwait"
	jobs := []string{"done", "x", "y", "z", "w"}
	f.graphRun(t, run, jobs, nil, [][2]string{{"x", "done"}, {"y", "x"}, {"z", "y"}, {"w", "done"}})
	require.NoError(t, f.pub.Publish(t.Context(), bus.OutcomeSubject(run), bus.MsgIDOutcome(run, "done"),
		&nixbuspb.JobOutcome{RunId: run, Attr: "done", DrvPath: storeDrv("done"), Status: nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, DurationMs: 9000}, nil))
	f.chunk(t, run, storeDrv("x"), 0, 1, "building x\n", false)

	_, body := get(t, http.DefaultClient, f.srv.URL+"/runs/"+run)
	attrs, sec := criticalSection(t, body)
	require.Equal(t, []string{"x", "y", "z"}, attrs, sec)
	require.Contains(t, sec, "Waiting on")
	require.Contains(t, sec, `st-building">building`)

	// Each row names what it waits for, found in the graph (these jobs
	// carry no DependsOn); w's only dependency is done.
	jobsTable := body[strings.Index(body, `<table id="jobs">`):]
	require.Contains(t, jobsTable, "waiting on x<")
	require.Contains(t, jobsTable, "waiting on y<")
	require.Contains(t, jobsTable, `st-waiting">waiting`)
	require.Equal(t, 2, strings.Count(jobsTable, `st-waiting">waiting`))
}

// A critical path longer than a page lists is cut at maxCriticalSteps,
// in order from its start, and says how many steps it left out.
func TestCriticalPathIsCut(t *testing.T) {
	rs := newRunState("rlong")
	const n = maxCriticalSteps + 2
	for i := range n {
		j := job{attr: fmt.Sprint("j", i), drv: storeDrv(fmt.Sprint("j", i)), system: "x86_64-linux"}
		if i > 0 {
			j.deps = []string{storeDrv(fmt.Sprint("j", i-1))} // a chain: j0 first
		}
		rs.jobs = append(rs.jobs, j)
	}
	rs.evalDone = &nixbuspb.EvalDone{RunId: "rlong", JobCount: n}
	c := rs.criticalPath(rs.rows(func(string) bool { return false }))
	require.NotNil(t, c)
	require.Len(t, c.Steps, maxCriticalSteps)
	require.Equal(t, "j0", c.Steps[0].Attr)
	require.Equal(t, fmt.Sprint("j", maxCriticalSteps-1), c.Steps[maxCriticalSteps-1].Attr)
	require.Equal(t, 2, c.More)
}
