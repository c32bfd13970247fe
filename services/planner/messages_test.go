package planner

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// maxInputs are the largest inputs a planner can be handed: any single
// message it reads is at most bus.MaxMessageSize, so an attribute name,
// an error or a change event can be almost that large, and a run can hold
// any number of jobs.
type maxInputs struct {
	attrLen, reasonLen, evalErrLen, changeLen int
	jobs, outputs, failed                     int
}

// fitCases are the seeds of FuzzMessagesFit, which `go test` always runs.
var fitCases = map[string]maxInputs{
	"small":                {attrLen: 10, reasonLen: 10, evalErrLen: 10, changeLen: 10, jobs: 1, outputs: 1, failed: 1},
	"huge attribute":       {attrLen: bus.MaxMessageSize - 100, reasonLen: 100, jobs: 2, outputs: 1, failed: 3},
	"huge reason":          {attrLen: 100, reasonLen: bus.MaxMessageSize, jobs: 1, outputs: 1, failed: 1},
	"huge attr and reason": {attrLen: bus.MaxMessageSize - 200, reasonLen: bus.MaxMessageSize, jobs: 3, outputs: 1, failed: 20},
	"huge eval error":      {attrLen: 10, evalErrLen: bus.MaxMessageSize - 1000, jobs: 1, failed: 0},
	"eval error near 1MiB": {attrLen: 10, evalErrLen: bus.MaxMessageSize - 100, changeLen: 2000, jobs: 1, failed: 2},
	"huge change":          {attrLen: 1000, reasonLen: 1000, changeLen: bus.MaxMessageSize / 9, jobs: 1, failed: 5000},
	"many failed":          {attrLen: 8 << 10, reasonLen: 64 << 10, evalErrLen: 64 << 10, changeLen: 8 << 10, jobs: 1, failed: 5000},
	"many attrs one drv":   {attrLen: 4 << 10, reasonLen: 10, jobs: 100_000, outputs: 1, failed: 1},
	"many outputs":         {attrLen: 100, jobs: 2, outputs: bus.MaxMessageSize / 80, failed: 1},
}

func TestMessagesFit(t *testing.T) {
	for name, in := range fitCases {
		t.Run(name, func(t *testing.T) { checkMessagesFit(t, in) })
	}
}

func FuzzMessagesFit(f *testing.F) {
	for _, in := range fitCases {
		f.Add(in.attrLen, in.reasonLen, in.evalErrLen, in.changeLen, in.jobs, in.outputs, in.failed)
	}
	f.Fuzz(func(t *testing.T, attrLen, reasonLen, evalErrLen, changeLen, jobs, outputs, failed int) {
		clamp := func(n, hi int) int { return min(max(n, 0), hi) }
		checkMessagesFit(t, maxInputs{
			attrLen: clamp(attrLen, bus.MaxMessageSize), reasonLen: clamp(reasonLen, bus.MaxMessageSize),
			evalErrLen: clamp(evalErrLen, bus.MaxMessageSize), changeLen: clamp(changeLen, bus.MaxMessageSize/9),
			jobs: clamp(jobs, 100_000) + 1, outputs: clamp(outputs, bus.MaxMessageSize/80), failed: clamp(failed, 10_000),
		})
	})
}

// checkMessagesFit builds every message the planner publishes with the
// functions it publishes them with, and encodes each as it does.
func checkMessagesFit(t *testing.T, in maxInputs) {
	t.Helper()
	text := func(n int, salt string) string {
		// Multi-byte runes, so that cuts must respect UTF-8.
		return strings.Repeat("é", n/2) + strings.Repeat("x", n%2) + salt
	}
	runID := strings.Repeat("r", 128)
	hdr := nats.Header{"traceparent": {"00-" + strings.Repeat("a", 32) + "-" + strings.Repeat("b", 16) + "-01"}}
	fits := func(subject, id string, m proto.Message) {
		t.Helper()
		msg, err := bus.NewMsg(subject, id, m, hdr)
		require.NoError(t, err, "%T", m)
		hdrBytes := 0
		for k, vs := range msg.Header {
			for _, v := range vs {
				hdrBytes += len(k) + len(v) + 4
			}
		}
		require.LessOrEqual(t, len(msg.Data)+hdrBytes+len(subject), bus.MaxMessageSize, "%T", m)
	}

	outputs := map[string]string{}
	for i := range in.outputs {
		outputs[fmt.Sprintf("out%d", i)] = "/nix/store/" + strings.Repeat("o", 32) + fmt.Sprintf("-%d", i)
	}
	// A job the evaluator could send: one message under the limit.
	jm := &nixbuspb.Job{RunId: runID, Attr: text(in.attrLen, ""), DrvPath: "/nix/store/" + strings.Repeat("d", 32) + "-x.drv",
		System: "x86_64-linux", Outputs: outputs, EvalError: text(in.reasonLen, "")}
	for proto.Size(jm) > bus.MaxMessageSize && jm.EvalError != "" {
		jm.EvalError = jm.EvalError[:len(jm.EvalError)/2]
	}
	if over := proto.Size(jm) - bus.MaxMessageSize; over > 0 {
		jm.Attr = jm.Attr[:len(jm.Attr)-over-8]
	}
	job := newJob(jm)

	rel := dag.Release{Drv: job.Drv, System: job.System, Jobs: make([]int32, in.jobs)}
	fits(bus.BuildSubject(rel.System), bus.MsgIDBuild(runID, rel.Drv),
		buildRequestMsg(runID, rel, func(int32) string { return job.Attr }, jm.GetOutputs()))

	st := &runMachine{s: &Service{cfg: DefaultConfig(), logger: slog.New(slog.DiscardHandler)}}
	st.s.cfg.VerdictFailedCap = 5000
	change := &nixbuspb.ChangeEvent{Project: text(in.changeLen, "p"), Change: 1, Patchset: 1}
	for _, s := range []*string{&change.EventId, &change.Ref, &change.Revision, &change.Branch, &change.RepoUrl, &change.LocalPath, &change.ChangeId, &change.Uploader} {
		*s = text(in.changeLen, "c")
	}
	r := &run{id: runID, change: change, startedMs: 1, evalDone: &nixbuspb.EvalDone{Error: text(in.evalErrLen, "")}}
	attr, reason := text(in.attrLen, ""), text(in.reasonLen, "")
	for i := range in.failed {
		j := job
		j.Attr = attr + fmt.Sprint(i)
		o := queuedOutcome{Outcome: dag.Outcome{Status: dag.Failed, Failure: dag.BuildFailure, Reason: reason},
			logKey: bus.LogKey(runID, j.Drv), durationMs: 1}
		out := outcomeMsg(runID, &j, o)
		fits(bus.OutcomeSubject(runID), bus.MsgIDOutcome(runID, j.Attr), out)
		o.Job = int32(i)
		st.listFailed(r, o, out)
	}
	v := verdictMsg(r, nixbuspb.RunStatus_RUN_STATUS_FAILED, "", time.UnixMilli(2))
	fits(bus.VerdictSubject(runID), bus.MsgIDVerdict(runID), v)
	if in.evalErrLen > 0 {
		require.NotEmpty(t, v.GetEvalError(), "the eval error is cut, never dropped")
	}
	require.Equal(t, int64(1), v.GetChange().GetChange())
}

// TestPlannerHugeTexts runs the largest texts a flake can produce through
// a planner: every run still ends with a verdict (issue 8, hole 3).
func TestPlannerHugeTexts(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	e.startBuilder(succeedAll)

	// Three attributes of one derivation, each name as long as a Job
	// message allows: the build request naming them all is over 1 MiB.
	e.startRun("r-attrs", nil)
	for i := range 3 {
		e.job("r-attrs", &nixbuspb.Job{Attr: strings.Repeat("a", 1000<<10) + fmt.Sprint(i), DrvPath: drv("shared"), System: x86})
	}
	e.evalDone("r-attrs", 3, "")
	v := e.verdict("r-attrs")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, v.GetStatus())
	require.Equal(t, int64(3), v.GetSucceededCount())

	// A whole-evaluation error just under the limit of its own message.
	evalErr := "error: " + strings.Repeat("é", (bus.MaxMessageSize-200)/2)
	e.startRun("r-eval", &nixbuspb.ChangeEvent{Project: "p", Change: 7, Patchset: 1})
	e.evalDone("r-eval", 0, evalErr)
	v = e.verdict("r-eval")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.True(t, strings.HasPrefix(evalErr, strings.TrimSuffix(v.GetEvalError(), "…")), "cut, not replaced")
	require.Less(t, len(v.GetEvalError()), 64<<10)
}
