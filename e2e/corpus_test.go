package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/internal/corpus"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/changeevent"
	"nixbus.dev/nixbus/pkg/natstest"
	"nixbus.dev/nixbus/pkg/nix"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// corpusRun runs a corpus job set through evaluator (built-in), planner and
// an instant builder (builds cannot run offline; no uploader: nothing is
// built), then one bare `nix eval` of the same jobs' drvPaths with
// builtins.tryEval. It checks the run's verdict: every attribute tryEval
// caught is a failed job with nix's own message, every other job
// succeeded. It returns the time from the change event to the verdict,
// and the bare nix eval's.
func corpusRun(tb testing.TB, sets corpus.Sets) (run, evalDone, bare time.Duration, jobs, errs int) {
	tb.Helper()
	nixpkgs := corpus.Nixpkgs(tb)
	dir := corpus.Flake(tb, nixpkgs, sets)

	srv := natstest.Start(tb)
	var o app.Options
	fs := newFlagSet()
	o.RegisterFlags(fs)
	require.NoError(tb, fs.Parse([]string{"--nats.url", srv.URL, "--state-dir", tb.TempDir(), "--nix.option", "substituters=",
		"--service", "evaluator", "--service", "planner", "--service", "builder"}))
	var c app.Configs
	fs = newFlagSet()
	c.RegisterFlags(fs)
	require.NoError(tb, fs.Parse([]string{"--evaluator.builtin", "--builder.instant", "--builder.concurrency", "64", "--builder.system", "x86_64-linux"}))
	ctx, cancel := context.WithCancel(tb.Context())
	inst, err := app.Start(ctx, o, &c, io.Discard, slog.New(slog.DiscardHandler))
	require.NoError(tb, err)
	tb.Cleanup(func() {
		cancel()
		require.NoError(tb, inst.Wait())
	})
	_, js := srv.Connect(tb)

	t0 := time.Now()
	ev, err := changeevent.Manual(changeevent.Options{LocalPath: dir})
	require.NoError(tb, err)
	require.NoError(tb, bus.NewPublisher(js, slog.New(slog.DiscardHandler)).Publish(tb.Context(), bus.ChangeSubject(ev.GetProject()), bus.MsgIDChange(ev.GetEventId()), ev, nil))
	verdict := waitVerdict(tb, js, 30*time.Minute)
	run = time.Since(t0)
	done := natstest.Read[nixbuspb.EvalDone](tb, js, bus.StreamRuns, bus.RunSubject(verdict.GetRunId(), bus.RunEvalKind))
	require.Len(tb, done, 1)
	require.Empty(tb, done[0].GetError())
	evalDone = time.Duration(done[0].GetDurationMs()) * time.Millisecond

	t0 = time.Now()
	n := &nix.Nix{Options: map[string]string{"substituters": ""}}
	out, err := n.Output(tb.Context(), []string{"eval"}, "--json", "--no-eval-cache", "path:"+dir+"#hydraJobs", "--apply", corpus.TryEvalApply)
	bare = time.Since(t0)
	require.NoError(tb, err)
	var want map[string]map[string]*string
	require.NoError(tb, json.Unmarshal(out, &want))

	outcomes := map[string]*nixbuspb.JobOutcome{}
	for _, o := range natstest.Read[nixbuspb.JobOutcome](tb, js, bus.StreamReports, bus.OutcomeSubject(verdict.GetRunId())) {
		require.NotContains(tb, outcomes, o.GetAttr(), "reported twice")
		outcomes[o.GetAttr()] = o
	}
	for set, attrs := range want {
		for name, drv := range attrs {
			jobs++
			attr := set + "." + name
			o, ok := outcomes[attr]
			require.True(tb, ok, "%s has no outcome", attr)
			if drv != nil {
				require.Equal(tb, nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, o.GetStatus(), "%s: %s", attr, o.GetReason())
				continue
			}
			errs++
			require.Equal(tb, nixbuspb.JobStatus_JOB_STATUS_FAILED, o.GetStatus(), attr)
			require.NotEmpty(tb, o.GetReason(), attr)
			require.NotContains(tb, o.GetReason(), "evaluation failed", attr)
		}
	}
	require.Len(tb, outcomes, jobs, "one outcome per job, no other")
	require.EqualValues(tb, jobs, verdict.GetJobCount())
	require.Equal(tb, nixbuspb.RunStatus_RUN_STATUS_FAILED, verdict.GetStatus())
	// Nix's own words, as nix-eval-jobs would report them.
	require.Contains(tb, outcomes["python3Packages.CDDB"].GetReason(), "CDDB-1.4 not supported for interpreter python3.8")
	require.Regexp(tb, `Package ‘python3.8-ColanderAlchemy-0.3.3’ in .* is marked as broken, refusing to evaluate`,
		outcomes["python3Packages.ColanderAlchemy"].GetReason())
	return run, evalDone, bare, jobs, errs
}

// TestCorpusRun: a run of a few hundred attributes of a real nixpkgs ends
// with a verdict naming every eval error with nix's message.
func TestCorpusRun(t *testing.T) {
	run, evalDone, bare, jobs, errs := corpusRun(t, corpus.Small)
	t.Logf("%d jobs, %d eval errors: evaluation %s, %s to the verdict; bare nix eval %s", jobs, errs, evalDone, run, bare)
}

// BenchmarkCorpusRun: the same on the full corpus job set (5,030 jobs, 326
// eval errors): the time from the change event to the verdict against one
// bare nix eval of the same jobs.
func BenchmarkCorpusRun(b *testing.B) {
	for range b.N {
		run, evalDone, bare, jobs, errs := corpusRun(b, corpus.Full)
		b.ReportMetric(float64(jobs), "jobs")
		b.ReportMetric(float64(errs), "eval-errors")
		b.ReportMetric(evalDone.Seconds(), "evaluation-s")
		b.ReportMetric(run.Seconds(), "to-verdict-s")
		b.ReportMetric(bare.Seconds(), "nix-eval-s")
		b.ReportMetric(evalDone.Seconds()/bare.Seconds(), "eval-ratio")
		ratio := evalDone.Seconds() / bare.Seconds()
		fmt.Printf("TARGET nixbus run on the corpus: %d jobs, %d eval errors in the verdict; evaluator (nix, jobs read, published) %.1f s, change to verdict %.1f s; bare nix eval with tryEval %.1f s; evaluation %.2fx (target <= 1.3x): %s; to the verdict %.2fx\n",
			jobs, errs, evalDone.Seconds(), run.Seconds(), bare.Seconds(), ratio, met(ratio <= 1.3), run.Seconds()/bare.Seconds())
	}
}
