package planner

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Everything the planner publishes is built here, from inputs a flake's
// author chose (attribute names, error texts, outputs) and a Gerrit user
// chose (the change event), and is made to fit the bus: free text is cut,
// lists are bounded, and whatever is still too large is shrunk until it
// fits. TestMessagesFit builds each message from maximal inputs.

// Caps that keep messages far below the bus's 1 MiB limit.
const (
	maxReasonBytes        = 16 << 10  // one outcome's reason
	maxVerdictReasonBytes = 2 << 10   // one reason inside a verdict
	maxVerdictAttrBytes   = 4 << 10   // one attribute name inside a verdict
	maxVerdictListBytes   = 512 << 10 // all failed jobs listed in a verdict
	maxEvalErrorBytes     = 16 << 10  // a whole-evaluation error in a verdict
	maxRequestAttrsBytes  = 64 << 10  // the attributes named in a build request
	maxRequestAttrBytes   = 4 << 10   // one of them
	maxRequestOutputBytes = 512 << 10 // the outputs in a build request
	// maxDrvPathBytes and maxSystemBytes bound what a job may name; a job
	// over them fails as an evaluation error instead of being planned.
	maxDrvPathBytes = 4 << 10
	maxSystemBytes  = 256
	// lastResortBytes is what a reason is cut to when the caps above were
	// not enough to fit its outcome.
	lastResortBytes = 1 << 10
)

// msgBudget is what one message's body may use: the bus limit less room
// for its headers (message id, trace context).
const msgBudget = bus.MaxMessageSize - 16<<10

// newJob is the plan's job for m. A job naming a derivation or system
// longer than any real one fails as an evaluation error: nothing could
// build it, and it would not fit a build request.
func newJob(m *nixbuspb.Job) dag.Job {
	j := dag.Job{
		Attr: m.GetAttr(), Drv: m.GetDrvPath(), System: m.GetSystem(), Cached: m.GetCached(),
		EvalError: m.GetEvalError(), DependsOn: m.GetDependsOn(),
	}
	if len(j.Drv) > maxDrvPathBytes || len(j.System) > maxSystemBytes {
		if j.EvalError == "" {
			j.EvalError = fmt.Sprintf("derivation path (%d bytes) or system (%d bytes) too long", len(j.Drv), len(j.System))
		}
		j.Drv, j.System, j.Cached, j.DependsOn = "", "", false, nil
	}
	return j
}

// outcomeMsg is the JobOutcome of job j.
func outcomeMsg(runID string, j *dag.Job, o queuedOutcome) *nixbuspb.JobOutcome {
	m := &nixbuspb.JobOutcome{
		RunId: runID, Attr: j.Attr, DrvPath: j.Drv, System: j.System, LogKey: o.logKey, DurationMs: o.durationMs,
		Status: jobStatus(o.Status), Failure: failureKind(o.Failure), Reason: bus.Truncate(o.Reason, maxReasonBytes),
	}
	if proto.Size(m) > msgBudget {
		// Only an attribute name close to the limit gets here.
		m.Reason = bus.Truncate(m.Reason, lastResortBytes)
		m.Attr = bus.Truncate(m.Attr, max(0, msgBudget-proto.Size(m)+len(m.Attr)-64))
	}
	return m
}

// verdictOutcome is the copy of a failed job's outcome a verdict lists.
func verdictOutcome(o *nixbuspb.JobOutcome) *nixbuspb.JobOutcome {
	c := proto.Clone(o).(*nixbuspb.JobOutcome)
	c.Reason = bus.Truncate(c.Reason, maxVerdictReasonBytes)
	c.Attr = bus.Truncate(c.Attr, maxVerdictAttrBytes)
	return c
}

// buildRequestMsg is the request to build rel, naming the attributes that
// share its derivation (within caps: the first names the build).
func buildRequestMsg(runID string, rel dag.Release, attrOf func(int32) string, outputs map[string]string) *nixbuspb.BuildRequest {
	attrs := make([]string, 0, min(len(rel.Jobs), 64))
	for _, j := range rel.Jobs {
		attrs = append(attrs, attrOf(j))
		if len(attrs) > maxRequestAttrsBytes/8 {
			break // capRequest keeps fewer anyway
		}
	}
	m := &nixbuspb.BuildRequest{RunId: runID, DrvPath: rel.Drv, System: rel.System, Attrs: attrs, Outputs: outputs}
	capRequest(m)
	return m
}

// capRequest cuts a build request's attributes and outputs to their caps:
// the first attribute (cut) always stays, as it names the build.
func capRequest(m *nixbuspb.BuildRequest) {
	size := 0
	for i, a := range m.Attrs {
		a = bus.Truncate(a, maxRequestAttrBytes)
		if size += len(a) + 8; size > maxRequestAttrsBytes && i > 0 {
			m.Attrs = m.Attrs[:i]
			break
		}
		m.Attrs[i] = a
	}
	if mapSize(m.Outputs) > maxRequestOutputBytes {
		// The builder reads the outputs back from nix; these only name
		// what the evaluator expected.
		m.Outputs = nil
	}
}

func mapSize(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v) + 8
	}
	return n
}

// verdictMsg is the verdict of run r.
func verdictMsg(r *run, status nixbuspb.RunStatus, supersededBy string, at time.Time) *nixbuspb.RunVerdict {
	v := &nixbuspb.RunVerdict{RunId: r.id, Change: r.change, Status: status, Failed: r.failed, SupersededBy: supersededBy}
	if r.plan != nil {
		c := r.plan.Counts()
		v.FailedCount, v.SucceededCount = int64(c.Failed), int64(c.Succeeded)
		v.CachedCount, v.SkippedCount = int64(c.Cached), int64(c.Skipped)
		v.JobCount = int64(len(r.jobs))
	}
	if r.evalDone != nil {
		v.EvalError = bus.Truncate(r.evalDone.GetError(), maxEvalErrorBytes)
		if v.JobCount == 0 {
			v.JobCount = r.evalDone.GetJobCount()
		}
	}
	if r.expired != "" && v.EvalError == "" && r.plan == nil {
		v.EvalError = r.expired
	}
	if !at.IsZero() && r.startedMs > 0 {
		v.DurationMs = max(0, at.UnixMilli()-r.startedMs)
	}
	fitVerdict(v)
	return v
}

// fitVerdict shrinks v until it fits the bus: the change event (as big as
// a RunStarted may be) is cut first, then failed jobs are left off the
// list (the counts stay exact).
func fitVerdict(v *nixbuspb.RunVerdict) {
	if proto.Size(v) <= msgBudget {
		return
	}
	v.Change = bus.CutChange(v.Change)
	for len(v.Failed) > 0 && proto.Size(v) > msgBudget {
		v.Failed = v.Failed[:len(v.Failed)/2]
	}
}

func jobStatus(s dag.Status) nixbuspb.JobStatus {
	switch s {
	case dag.Succeeded:
		return nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED
	case dag.Failed:
		return nixbuspb.JobStatus_JOB_STATUS_FAILED
	case dag.Skipped:
		return nixbuspb.JobStatus_JOB_STATUS_SKIPPED
	case dag.Cached:
		return nixbuspb.JobStatus_JOB_STATUS_CACHED
	}
	return nixbuspb.JobStatus_JOB_STATUS_UNSPECIFIED
}

func failureKind(f dag.Failure) nixbuspb.FailureKind {
	switch f {
	case dag.BuildFailure:
		return nixbuspb.FailureKind_FAILURE_KIND_BUILD
	case dag.EvalFailure:
		return nixbuspb.FailureKind_FAILURE_KIND_EVAL
	case dag.DependencyFailure:
		return nixbuspb.FailureKind_FAILURE_KIND_DEPENDENCY
	case dag.TimeoutFailure:
		return nixbuspb.FailureKind_FAILURE_KIND_TIMEOUT
	case dag.CachedFailure:
		return nixbuspb.FailureKind_FAILURE_KIND_CACHED
	}
	return nixbuspb.FailureKind_FAILURE_KIND_UNSPECIFIED
}
