package planner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// restart honours a RestartJob (published by the web page or `nixbus
// restart` for an admin): the failed build of a run that has ended is
// released again and the run is reopened. Its request and result are told
// apart from the first build's by restart_seq, the stream sequence of the
// RestartJob. What the failure skipped waits for the rebuild again (and is
// built once it succeeds, as the DAG would have); outcomes that change are
// published again, and once every affected job is done the run gets a new
// verdict, whose revision is that sequence (the reporter votes again if
// the vote or the failed jobs changed).
//
// The ended run's state is re-derived from its messages on the runs stream
// before the RestartJob (restore), so that a replay after a restart of the
// planner reopens it the same way and publishes the same messages. A
// restart of another failed job of a reopened run joins it: the verdict
// waits for both, and its revision is the later sequence.
//
// It is refused (logged, nothing published) for a run on its first
// verdict still running, an unknown run or derivation, a build that did
// not fail, a run that was cancelled (its builders refuse to build for
// it), or a restart already answered (a replay: a verdict of that
// revision or a later one is stored).
func (st *runMachine) restart(ctx context.Context, runID string, seq uint64, m *nixbuspb.RestartJob, hdr nats.Header, at time.Time) error {
	logger := st.s.logger.With("run", runID, "drv", m.GetDrvPath(), "requested_by", bus.Truncate(m.GetRequestedBy(), 200))
	r, active := st.runs[runID]
	switch {
	case active && (r.rev == 0 || r.plan == nil):
		logger.Warn("restart of a job of a run still running ignored")
		return nil
	case !active:
		var err error
		if r, err = st.reopen(ctx, runID, seq, m.GetDrvPath(), hdr, at, logger); r == nil || err != nil {
			return err
		}
	}
	if !st.retryJob(r, seq, m.GetDrvPath()) {
		logger.Warn("restart of a job whose build did not fail ignored")
		return nil
	}
	if !active {
		st.runs[runID] = r
		st.s.metrics.activeRuns.Inc()
	}
	logger.Info("job restarted", "revision", seq)
	return st.flush(ctx, r)
}

// reopen restores ended run runID for the RestartJob of drv at stream
// sequence seq, stored at time at. It returns no run (logged why) when
// the restart is refused or was answered before this replay.
func (st *runMachine) reopen(ctx context.Context, runID string, seq uint64, drv string, hdr nats.Header, at time.Time, logger *slog.Logger) (*run, error) {
	if !bus.ValidRunID(runID) || len(drv) > maxDrvPathBytes {
		logger.Warn("restart of an unknown job ignored")
		return nil, nil
	}
	rev, found, err := st.revision(ctx, runID)
	switch {
	case err != nil:
		return nil, err
	case !found:
		logger.Warn("restart of a job of a run without a verdict ignored")
		return nil, nil
	case rev >= seq:
		return nil, nil // answered before this replay
	}
	r, refused, err := st.restore(ctx, runID, seq)
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		logger.Error("restart: read the run", "err", err)
		return nil, nil
	case refused != "":
		logger.Warn("restart ignored", "why", refused)
		return nil, nil
	}
	r.seq, r.startAt, r.lastAt, r.startedMs, r.expired = seq, at, at, at.UnixMilli(), ""
	if h := bus.SpanHeader(bus.TraceOf(hdr)); h != nil {
		r.hdr = h
	}
	return r, nil
}

// retryJob releases drv of r again for the RestartJob at stream sequence
// seq, which becomes r's revision, and queues what that produces. It
// reports false, changing nothing, when drv's build did not fail.
func (st *runMachine) retryJob(r *run, seq uint64, drv string) bool {
	st.ev.Reset()
	if !r.plan.Retry(drv, &st.ev) {
		return false
	}
	r.rev = seq
	st.enqueue(r, &st.ev, nil, "")
	return true
}

// revision is the revision of the newest verdict of run, from this
// planner's memory of the runs it ended (their verdicts may not be stored
// yet) or else from the reports stream.
func (st *runMachine) revision(ctx context.Context, runID string) (rev uint64, found bool, err error) {
	if rev, ok := st.ended.get(runID); ok {
		return rev, true, nil
	}
	raw, err := st.storedVerdict(ctx, runID)
	if raw == nil || err != nil {
		return 0, false, err
	}
	var v nixbuspb.RunVerdict
	if bus.Decode(raw.Data, &v) != nil {
		return 0, false, nil // unreadable: not found
	}
	return v.GetRevision(), true, nil
}

// errEnough stops reading a run's history at the RestartJob.
var errEnough = errors.New("read enough")

// restore re-derives an ended run (see rederive) to restart one of its
// jobs. Jobs still building at the end (the run ended without their
// results) fail. It returns why the run cannot be restarted, if it cannot.
func (st *runMachine) restore(ctx context.Context, runID string, until uint64) (*run, string, error) {
	r, cancelled, err := st.rederive(ctx, runID, until)
	switch {
	case err != nil:
		return nil, "", err
	case cancelled != nil:
		return nil, "the run was cancelled", nil
	case r.change == nil || r.plan == nil:
		return nil, "the run was never planned", nil
	}
	// What the run ended without results for failed as the planner
	// decided then (no builder for its system), which its messages do not
	// say: as its outcomes on the reports stream do.
	decided, err := st.decidedFailures(ctx, r)
	if err != nil {
		return nil, "", err
	}
	for _, d := range slices.SortedFunc(maps.Keys(decided), func(a, b decision) int {
		return cmp.Or(cmp.Compare(a.reason, b.reason), cmp.Compare(a.failure, b.failure))
	}) {
		drvs := decided[d]
		st.failBuilding(r, func(j *dag.Job) bool { _, ok := drvs[j.Drv]; return ok }, d.failure, d.reason)
	}
	st.failBuilding(r, func(*dag.Job) bool { return true }, dag.TimeoutFailure, "unfinished when the run ended")
	st.settle(r)
	return r, "", nil
}

type decision struct {
	failure dag.Failure
	reason  string
}

// decidedFailures are the failures published for r's jobs still building
// once it is re-derived, by failure and reason (few: the planner decides
// them per system), each with its derivations.
func (st *runMachine) decidedFailures(ctx context.Context, r *run) (map[decision]map[string]struct{}, error) {
	building := map[string]string{} // attr -> drv
	for i := range r.jobs {
		if r.plan.Status(i) == dag.Building {
			building[r.jobs[i].Attr] = r.jobs[i].Drv
		}
	}
	if len(building) == 0 {
		return nil, nil
	}
	last := map[string]*nixbuspb.JobOutcome{}
	_, err := bus.ReadOrdered(ctx, st.s.js, bus.StreamReports, []string{bus.OutcomeSubject(r.id)}, 0, func(msg jetstream.Msg) error {
		var o nixbuspb.JobOutcome
		if bus.Decode(msg.Data(), &o) == nil {
			if _, ok := building[o.GetAttr()]; ok {
				last[o.GetAttr()] = &o
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outcomes of run %s: %w", r.id, err)
	}
	decided := map[decision]map[string]struct{}{}
	for attr, o := range last {
		if o.GetStatus() != nixbuspb.JobStatus_JOB_STATUS_FAILED {
			continue
		}
		d := decision{dagFailure(o.GetFailure()), o.GetReason()}
		if decided[d] == nil {
			decided[d] = map[string]struct{}{}
		}
		decided[d][building[attr]] = struct{}{}
	}
	return decided, nil
}

// dagFailure is the dag.Failure failureKind gives k (BuildFailure for
// none).
func dagFailure(k nixbuspb.FailureKind) dag.Failure {
	for f := dag.BuildFailure; f <= dag.CachedFailure; f++ {
		if failureKind(f) == k {
			return f
		}
	}
	return dag.BuildFailure
}

// rederive re-derives a run from its messages on the runs stream before
// sequence until, as the planner handled them: jobs and graph, planning,
// build results, and the restarts answered before (a restart was answered
// when a result of its rebuild is there). What the planner published of
// it is taken as published (settle); nothing is published. When a Cancel
// is read, the run ends there and it is returned.
func (st *runMachine) rederive(ctx context.Context, runID string, until uint64) (*run, *nixbuspb.Cancel, error) {
	type item struct {
		kind string
		msg  jetstream.Msg
		at   time.Time
	}
	var items []item
	answered := map[string]map[uint64]bool{} // drv -> restart_seq of rebuilds with a result
	_, err := bus.ReadOrdered(ctx, st.s.js, bus.StreamRuns, []string{bus.RunSubject(runID, ">")}, 0, func(msg jetstream.Msg) error {
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		if meta.Sequence.Stream >= until {
			return errEnough
		}
		_, kind, err := bus.ParseRunSubject(msg.Subject())
		if err != nil {
			return nil
		}
		if kind == bus.RunResultKind {
			var res nixbuspb.BuildResult
			if bus.Decode(msg.Data(), &res) == nil && res.GetRestartSeq() > 0 {
				if answered[res.GetDrvPath()] == nil {
					answered[res.GetDrvPath()] = map[uint64]bool{}
				}
				answered[res.GetDrvPath()][res.GetRestartSeq()] = true
			}
		}
		items = append(items, item{kind, msg, meta.Timestamp})
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, nil, err
	}
	r := &run{id: runID, attrs: map[string]struct{}{}, building: map[string]int{}, failedLogs: map[int32]string{}}
	var early []earlyResult
	for _, it := range items {
		switch it.kind {
		case bus.RunStartedKind:
			var m nixbuspb.RunStarted
			if bus.Decode(it.msg.Data(), &m) == nil && r.change == nil {
				r.change, r.hdr = m.GetChange(), bus.SpanHeader(bus.TraceOf(it.msg.Headers()))
			}
		case bus.RunJobKind:
			var m nixbuspb.Job
			if r.plan == nil && bus.Decode(it.msg.Data(), &m) == nil {
				r.addJob(&m)
			}
		case bus.RunGraphKind:
			var m nixbuspb.GraphChunk
			if r.plan == nil && bus.Decode(it.msg.Data(), &m) == nil {
				r.addChunk(&m)
			}
		case bus.RunEvalKind:
			var m nixbuspb.EvalDone
			if r.evalDone == nil && bus.Decode(it.msg.Data(), &m) == nil {
				r.evalDone = &m
			}
		case bus.RunCancelKind:
			var m nixbuspb.Cancel
			if bus.Decode(it.msg.Data(), &m) == nil {
				return r, &m, nil
			}
		case bus.RunResultKind:
			var m nixbuspb.BuildResult
			if bus.Decode(it.msg.Data(), &m) != nil {
				continue
			}
			if r.plan == nil {
				early = append(early, earlyResult{&m, it.at, ""})
			} else if st.apply(r, &m, it.at, "") {
				st.settle(r)
			}
		case bus.RunRestartKind:
			var m nixbuspb.RestartJob
			if r.plan == nil || bus.Decode(it.msg.Data(), &m) != nil {
				continue
			}
			meta, err := it.msg.Metadata()
			if err != nil || !answered[m.GetDrvPath()][meta.Sequence.Stream] {
				continue
			}
			if st.retryJob(r, meta.Sequence.Stream, m.GetDrvPath()) {
				st.settle(r)
			}
		}
		if r.plan == nil && r.collected() && r.evalDone.GetError() == "" {
			st.restorePlan(r, it.at)
			for _, e := range early {
				if st.apply(r, e.m, e.at, "") {
					st.settle(r)
				}
			}
			early = nil
		}
	}
	return r, nil, nil
}

// restorePlan plans r at once, as install does in the background; at is
// when the message that let the planner plan it was stored.
func (st *runMachine) restorePlan(r *run, at time.Time) {
	st.markFailedBefore(r, at) // as maybePlan did, from what the cache said then
	r.plan = newPlan(r.jobs, r.graph)
	r.graph, r.chunkSeen, r.attrs = nil, nil, nil
	st.ev.Reset()
	r.plan.Start(&st.ev)
	st.enqueue(r, &st.ev, nil, "")
	st.settle(r)
}

// settle takes in r's backlog as the planner published it before: the
// failed jobs' list is kept, nothing is sent.
func (st *runMachine) settle(r *run) {
	for _, o := range r.backlog.outcomes {
		st.listFailed(r, o, nil) // a message only for what is listed
	}
	r.backlog = backlog{}
}

// endedRuns remembers the verdict revision of the runs this planner ended
// lately: a restart read right after a verdict was sent must see it,
// stored or not (as a replay would).
type endedRuns struct {
	rev   map[string]uint64
	order []string
}

// endedKeep bounds endedRuns; older runs' verdicts are long stored.
const endedKeep = 4096

func (e *endedRuns) add(runID string, rev uint64) {
	if e.rev == nil {
		e.rev = map[string]uint64{}
	}
	if _, ok := e.rev[runID]; !ok {
		e.order = append(e.order, runID)
	}
	e.rev[runID] = rev
	if len(e.order) > endedKeep {
		delete(e.rev, e.order[0])
		e.order = e.order[1:]
	}
}

func (e *endedRuns) get(runID string) (uint64, bool) {
	rev, ok := e.rev[runID]
	return rev, ok
}
