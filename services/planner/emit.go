package planner

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	"nixbus.dev/nixbus/pkg/prom"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Emitting: what the runMachine decides (build requests, job outcomes,
// verdicts, cancels) goes out through the outbox from here. A step of a
// run's plan queues what it produced in the run's backlog (enqueue), and
// flush publishes it in chunks that take turns with other runs (drain).

// backlog is what a run's plan produced and the planner has yet to publish,
// in order: releases before outcomes, as builders wait for the former and
// nobody waits for the latter.
type backlog struct {
	releases []queuedRelease
	outcomes []queuedOutcome
}

type queuedRelease struct {
	dag.Release
	after string // traceparent of the build whose result released it, if any
}

type queuedOutcome struct {
	dag.Outcome
	logKey     string // of the build that decided it, if any
	durationMs int64
	rev        uint64 // the run's rev when it was decided
}

func (b *backlog) len() int { return len(b.releases) + len(b.outcomes) }

// emitChunk bounds the messages one turn of a run's backlog publishes.
const emitChunk = 256

// enqueue adds what a step of r's plan produced to r's backlog; res is the
// build result that caused it, whose log goes with the outcomes it decided,
// and after the traceparent of that build's span.
func (st *runMachine) enqueue(r *run, ev *dag.Events, res *nixbuspb.BuildResult, after string) {
	for _, rel := range ev.Releases {
		r.building[rel.System]++
		st.s.metrics.building.WithLabelValues(rel.System).Inc()
		if r.rev > 0 {
			if r.expect == nil {
				r.expect = map[string]uint64{}
			}
			r.expect[rel.Drv] = r.rev
		}
		r.backlog.releases = append(r.backlog.releases, queuedRelease{rel, after})
	}
	// A skipped job links the log of the failure that skipped it, which
	// is among the outcomes before it (dag.Plan reports a failure, then
	// its skips).
	var failedLog map[int32]string
	for _, o := range ev.Outcomes {
		q := queuedOutcome{Outcome: o, rev: r.rev}
		switch {
		case o.Status == dag.Skipped:
			q.logKey = failedLog[o.Cause]
			if q.logKey == "" {
				q.logKey = r.failedLogs[o.Cause] // a restart skipped it again
			}
		case o.Failure == dag.CachedFailure:
			fb := r.failedBefore[r.jobs[o.Job].Drv]
			q.logKey, q.durationMs = fb.GetLogKey(), fb.GetDurationMs()
		case res != nil && r.jobs[o.Job].Drv == res.GetDrvPath():
			q.logKey, q.durationMs = res.GetLogKey(), res.GetDurationMs()
		}
		if o.Status == dag.Failed && q.logKey != "" {
			if failedLog == nil {
				failedLog = map[int32]string{}
			}
			failedLog[o.Job] = q.logKey
		}
		r.backlog.outcomes = append(r.backlog.outcomes, q)
	}
}

// flush publishes up to emitChunk messages of r's backlog, leaving the rest
// for later turns, and the verdict once the plan is done and all is out.
func (st *runMachine) flush(ctx context.Context, r *run) error {
	b := &r.backlog
	n := 0
	for ; n < emitChunk && len(b.releases) > 0; n++ {
		rel := b.releases[0]
		b.releases = b.releases[1:]
		if r.plan.Status(int(rel.Jobs[0])) != dag.Building {
			continue // a replayed result finished it already
		}
		req := buildRequestMsg(r.id, rel.Release, func(j int32) string { return r.jobs[j].Attr }, r.outputs[rel.Jobs[0]])
		req.PlanTraceparent, req.AfterTraceparent = r.planTrace, rel.after
		req.RestartSeq = r.expect[rel.Drv]
		if err := st.send(ctx, r, bus.BuildSubject(rel.System), bus.MsgIDRebuild(r.id, rel.Drv, req.RestartSeq), req); err != nil {
			return err
		}
		st.s.metrics.released.WithLabelValues(rel.System).Inc()
		st.s.fleet.released(rel.System)
	}
	for ; n < emitChunk && len(b.outcomes) > 0; n++ {
		o := b.outcomes[0]
		b.outcomes = b.outcomes[1:]
		j := &r.jobs[o.Job]
		out := outcomeMsg(r.id, j, o)
		if err := st.send(ctx, r, bus.OutcomeSubject(r.id), bus.MsgIDOutcomeRevision(r.id, j.Attr, o.rev), out); err != nil {
			return err
		}
		st.s.metrics.outcomes.WithLabelValues(prom.EnumLabel(out.GetStatus())).Inc()
		if o.Failure == dag.CachedFailure {
			st.s.metrics.cachedFails.Inc()
		}
		st.listFailed(r, o, out)
	}
	if b.len() > 0 {
		if !r.busy {
			r.busy = true
			st.busy = append(st.busy, r)
		}
		return nil
	}
	*b = backlog{} // let a large first backlog's arrays go
	if !r.plan.Done() {
		return nil
	}
	status := nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED
	if !r.plan.Succeeded() {
		status = nixbuspb.RunStatus_RUN_STATUS_FAILED
	}
	return st.finish(ctx, r, status, "", r.lastAt)
}

// drain gives the run first in line one turn at publishing its backlog.
func (st *runMachine) drain(ctx context.Context) error {
	r := st.busy[0]
	st.busy[0] = nil
	st.busy = st.busy[1:]
	r.busy = false
	if st.runs[r.id] != r {
		return nil // finished meanwhile
	}
	return st.flush(ctx, r)
}

// listFailed adds a failed or skipped job to the verdict's list, within
// caps. In a run reopened by a restart, a job's new outcome replaces the
// one listed (the list stays in the order jobs were decided). o is the
// outcome's message; nil, it is built if listed.
func (st *runMachine) listFailed(r *run, q queuedOutcome, o *nixbuspb.JobOutcome) {
	if r.failedLogs != nil && q.Status == dag.Failed && q.logKey != "" {
		r.failedLogs[q.Job] = q.logKey
	}
	if q.rev > 0 {
		if i := slices.Index(r.failedJobs, q.Job); i >= 0 {
			r.listBytes -= proto.Size(r.failed[i])
			r.failed = slices.Delete(r.failed, i, i+1)
			r.failedJobs = slices.Delete(r.failedJobs, i, i+1)
		}
	}
	if q.Status != dag.Failed && q.Status != dag.Skipped {
		return
	}
	if len(r.failed) >= st.s.cfg.VerdictFailedCap || r.listBytes >= maxVerdictListBytes {
		return
	}
	if o == nil {
		o = outcomeMsg(r.id, &r.jobs[q.Job], q)
	}
	c := verdictOutcome(o)
	r.failed = append(r.failed, c)
	r.failedJobs = append(r.failedJobs, q.Job)
	r.listBytes += proto.Size(c)
}

func (st *runMachine) send(ctx context.Context, r *run, subject, id string, m proto.Message) error {
	msg, err := bus.NewMsg(subject, id, m, r.hdr)
	if err != nil {
		// The builders in messages.go make every message fit, so this is
		// a bug: stop rather than leave a run without its verdict.
		return fmt.Errorf("planner: run %s: %w", r.id, err)
	}
	return st.out.publish(ctx, msg)
}
