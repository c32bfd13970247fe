package planner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Runs that would never end on their own, a job for a system no builder
// serves, a builder pool that is gone, an evaluation that never finished,
// are ended here: on every tick, a run past --planner.run-timeout has its
// unfinished jobs failed, and a system no builder has been heard from for
// --planner.no-builder-timeout has its building jobs failed. Their
// outcomes and the verdict then follow as for any failure.

// deadlineReason starts the reason of what fails at the run deadline.
const deadlineReason = "run deadline passed"

// builderAlive records a builder's heartbeat (nixbus.builder.<system>).
func (st *runMachine) builderAlive(data []byte) {
	var m nixbuspb.BuilderAlive
	if err := bus.Decode(data, &m); err != nil || m.GetSystem() == "" || len(m.GetSystem()) > maxSystemBytes {
		return
	}
	now := st.s.now()
	if _, ok := st.seen[m.GetSystem()]; !ok {
		st.s.logger.Info("builder seen", "system", m.GetSystem(), "builder", bus.Truncate(m.GetBuilder(), 200))
	}
	st.seen[m.GetSystem()] = now
	st.s.fleet.heard(m.GetSystem(), bus.Truncate(m.GetBuilder(), 200), time.Duration(m.GetIntervalMs())*time.Millisecond)
	st.s.metrics.builderSeen.WithLabelValues(m.GetSystem()).Set(float64(now.UnixMilli()) / 1000)
}

// lastSeen is when a builder of system was last heard from: never before
// this planner started, which gives every system one timeout to be heard.
func (st *runMachine) lastSeen(system string) time.Time {
	if t, ok := st.seen[system]; ok && t.After(st.since) {
		return t
	}
	return st.since
}

// expire ends what is past its deadline. It returns an error only when ctx
// ended or a message could not be built.
func (st *runMachine) expire(ctx context.Context) error {
	now := st.s.now()
	for _, r := range st.runs {
		if r.planning {
			continue // the next tick, once planned
		}
		if now.Sub(r.startAt) >= st.s.cfg.RunTimeout {
			if err := st.deadline(ctx, r); err != nil {
				return err
			}
			continue
		}
		if r.plan == nil {
			continue
		}
		changed := false
		for _, sys := range slices.Sorted(mapKeys(r.building)) {
			if r.building[sys] <= 0 || now.Sub(st.lastSeen(sys)) < st.s.cfg.NoBuilderTimeout {
				continue
			}
			reason := fmt.Sprintf("no builder for system %s: none seen for %s", sys, st.s.cfg.NoBuilderTimeout)
			st.s.logger.Warn("no builder for system", "run", r.id, "system", sys, "jobs", r.building[sys])
			st.failBuilding(r, func(j *dag.Job) bool { return j.System == sys }, dag.BuildFailure, reason)
			changed = true
		}
		if changed {
			if err := st.flush(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// deadline ends run r: its builders are told to stop, every unfinished
// job fails, and the verdict follows.
func (st *runMachine) deadline(ctx context.Context, r *run) error {
	if r.expired != "" {
		return nil // ended already, its backlog is being published
	}
	r.expired = fmt.Sprintf("%s: unfinished %s after it started", deadlineReason, st.s.cfg.RunTimeout)
	st.s.logger.Warn("run deadline passed", "run", r.id, "timeout", st.s.cfg.RunTimeout)
	if r.plan == nil {
		// Evaluation never finished (or never sent every job).
		return st.finish(ctx, r, nixbuspb.RunStatus_RUN_STATUS_FAILED, "", st.s.now())
	}
	// Builders stop the run's builds; the planner ignores this Cancel when
	// it reads it back (the run ends FAILED, with a vote).
	m := &nixbuspb.Cancel{RunId: r.id, Reason: r.expired}
	if err := st.send(ctx, r, bus.RunSubject(r.id, bus.RunCancelKind), bus.MsgIDCancel(r.id), m); err != nil {
		return err
	}
	st.failBuilding(r, func(*dag.Job) bool { return true }, dag.TimeoutFailure, r.expired)
	return st.flush(ctx, r)
}

// failBuilding fails r's building derivations whose jobs match; what
// depends on them is skipped, as after a failed build.
func (st *runMachine) failBuilding(r *run, match func(*dag.Job) bool, f dag.Failure, reason string) {
	var drvs []string
	for i := range r.jobs {
		if r.plan.Status(i) == dag.Building && match(&r.jobs[i]) {
			drvs = append(drvs, r.jobs[i].Drv)
		}
	}
	slices.Sort(drvs)
	for _, drv := range slices.Compact(drvs) {
		st.ev.Reset()
		if !r.plan.Fail(drv, f, reason, &st.ev) {
			continue
		}
		sys := r.jobs[st.ev.Outcomes[0].Job].System
		r.building[sys]--
		st.s.metrics.building.WithLabelValues(sys).Dec()
		st.enqueue(r, &st.ev, nil, "")
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// endStale gives a verdict to every run that started, at or after stream
// sequence from, before bound (the oldest a restart replays) and has
// none: it passed its deadline while no planner ran, and would otherwise
// never end. It is re-derived from its messages, then ends as at its
// deadline (or, if it was cancelled, as cancelled); what the planner had
// published of it is not published again.
func (st *runMachine) endStale(ctx context.Context, from uint64, bound time.Time) error {
	type start struct {
		id  string
		seq uint64
		at  time.Time
	}
	var starts []start
	_, err := bus.ReadOrdered(ctx, st.s.js, bus.StreamRuns, []string{bus.RunSubject("*", bus.RunStartedKind)}, max(from, 1)-1, func(msg jetstream.Msg) error {
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		if !meta.Timestamp.Before(bound) {
			return errEnough
		}
		if id, _, err := bus.ParseRunSubject(msg.Subject()); err == nil && bus.ValidRunID(id) {
			starts = append(starts, start{id, meta.Sequence.Stream, meta.Timestamp})
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return fmt.Errorf("read runs started before %s: %w", bound, err)
	}
	for _, s := range starts {
		if _, active := st.runs[s.id]; active {
			continue
		}
		done, err := st.finished(ctx, s.id)
		if err != nil {
			return err
		}
		if done {
			continue
		}
		r, cancelled, err := st.rederive(ctx, s.id, math.MaxUint64)
		if err != nil {
			return fmt.Errorf("read run %s: %w", s.id, err)
		}
		if r.change == nil {
			continue // its RunStarted does not decode: it never was a run
		}
		r.seq, r.startAt, r.lastAt, r.startedMs = s.seq, s.at, st.s.now(), s.at.UnixMilli()
		st.runs[r.id] = r
		st.s.metrics.activeRuns.Inc()
		st.s.logger.Warn("run without a verdict from before the replay", "run", r.id, "started", s.at)
		if cancelled != nil && !strings.HasPrefix(cancelled.GetReason(), deadlineReason) {
			err = st.cancel(ctx, r, cancelled.GetSupersededBy(), s.at)
		} else {
			err = st.deadline(ctx, r)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
