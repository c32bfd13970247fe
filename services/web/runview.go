package web

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Job states as the run page shows them (and as ?status= filters them).
const (
	jsSucceeded = "succeeded"
	jsFailed    = "failed"
	jsSkipped   = "skipped"
	jsCached    = "cached"
	jsCancelled = "cancelled"
	jsBuilding  = "building"
	jsQueued    = "queued"
	jsWaiting   = "waiting"
	jsRestart   = "restarting"
)

// jobStates lists them in the order the progress line shows them.
var jobStates = []string{jsSucceeded, jsCached, jsFailed, jsSkipped, jsCancelled, jsBuilding, jsRestart, jsQueued, jsWaiting}

type job struct {
	attr, drv, system, evalErr string
	cached                     bool
	deps                       []string
}

// runState is everything the bus holds on one run, read incrementally:
// each look continues from the last stream sequences read.
type runState struct {
	mu         sync.Mutex
	id         string
	started    *nixbuspb.RunStarted
	jobs       []job
	evalDone   *nixbuspb.EvalDone
	chunks     []*nixbuspb.GraphChunk // the derivation graph, in parts
	chunkSeen  map[int32]bool
	graph      *dag.Plan // built from jobs and chunks once evaluated, never run
	cancel     *nixbuspb.Cancel
	results    map[string]*nixbuspb.BuildResult // newest per drv
	resultSeq  map[string]uint64
	restarts   map[string]uint64 // newest RestartJob per drv
	outcomes   map[string]*nixbuspb.JobOutcome
	verdict    *nixbuspb.RunVerdict
	runsSeq    uint64
	reportsSeq uint64
	used       time.Time
}

func newRunState(id string) *runState {
	return &runState{id: id, chunkSeen: map[int32]bool{}, results: map[string]*nixbuspb.BuildResult{},
		resultSeq: map[string]uint64{}, restarts: map[string]uint64{}, outcomes: map[string]*nixbuspb.JobOutcome{}}
}

// refresh reads what the run's subjects gained since the last look.
func (rs *runState) refresh(ctx context.Context, js jetstream.JetStream) error {
	var err error
	rs.runsSeq, err = bus.ReadOrdered(ctx, js, bus.StreamRuns, []string{bus.RunSubject(rs.id, ">")}, rs.runsSeq, rs.onRun)
	if err != nil {
		return err
	}
	rs.reportsSeq, err = bus.ReadOrdered(ctx, js, bus.StreamReports,
		[]string{bus.OutcomeSubject(rs.id), bus.VerdictSubject(rs.id)}, rs.reportsSeq, rs.onReport)
	return err
}

func (rs *runState) onRun(msg jetstream.Msg) error {
	_, kind, err := bus.ParseRunSubject(msg.Subject())
	if err != nil {
		return nil
	}
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	switch kind {
	case bus.RunStartedKind:
		var m nixbuspb.RunStarted
		if bus.Decode(msg.Data(), &m) == nil && rs.started == nil {
			rs.started = &m
		}
	case bus.RunJobKind:
		var m nixbuspb.Job
		if bus.Decode(msg.Data(), &m) == nil {
			rs.jobs = append(rs.jobs, job{attr: m.GetAttr(), drv: m.GetDrvPath(), system: m.GetSystem(), evalErr: m.GetEvalError(),
				cached: m.GetCached(), deps: m.GetDependsOn()})
			rs.graph = nil
		}
	case bus.RunGraphKind:
		var m nixbuspb.GraphChunk
		if bus.Decode(msg.Data(), &m) == nil && !rs.chunkSeen[m.GetIndex()] {
			rs.chunkSeen[m.GetIndex()] = true
			rs.chunks = append(rs.chunks, &m)
			rs.graph = nil
		}
	case bus.RunEvalKind:
		var m nixbuspb.EvalDone
		if bus.Decode(msg.Data(), &m) == nil {
			rs.evalDone = &m
		}
	case bus.RunResultKind:
		var m nixbuspb.BuildResult
		if bus.Decode(msg.Data(), &m) == nil {
			rs.results[m.GetDrvPath()] = &m
			rs.resultSeq[m.GetDrvPath()] = meta.Sequence.Stream
		}
	case bus.RunCancelKind:
		var m nixbuspb.Cancel
		if bus.Decode(msg.Data(), &m) == nil {
			rs.cancel = &m
		}
	case bus.RunRestartKind:
		var m nixbuspb.RestartJob
		if bus.Decode(msg.Data(), &m) == nil {
			rs.restarts[m.GetDrvPath()] = meta.Sequence.Stream
		}
	}
	return nil
}

func (rs *runState) onReport(msg jetstream.Msg) error {
	switch msg.Subject() {
	case bus.VerdictSubject(rs.id):
		var m nixbuspb.RunVerdict
		if bus.Decode(msg.Data(), &m) == nil {
			rs.verdict = &m
		}
	default:
		var m nixbuspb.JobOutcome
		if bus.Decode(msg.Data(), &m) == nil {
			rs.outcomes[m.GetAttr()] = &m
		}
	}
	return nil
}

// jobRow is one row of the run page.
type jobRow struct {
	Attr, Drv, DrvBase, System string
	Status                     string
	Reason                     string
	DurationMs                 int64
	Builder                    string
	WaitingOn                  []string
	WaitingMore                bool // waits for others besides
	Rebuilt                    bool
	// Restartable: an admin may build it again (a build that failed, in
	// a run that ended and was not cancelled).
	Restartable bool
	// restartSeq is the pending restart's sequence (status restarting).
	restartSeq uint64
	// logRun and logDrv name the log of an earlier run's build when the
	// job was not built in this one (a cached failure links the first).
	logRun, logDrv string
}

// maxWaitingOn bounds the jobs a row names as what it waits on.
const maxWaitingOn = 3

// plan is the run's DAG from the jobs and graph read so far, built again
// only when they change. It is never run: the page reads its shape.
func (rs *runState) plan() *dag.Plan {
	if rs.graph == nil {
		rs.graph = runPlan(rs.jobs, rs.chunks)
	}
	return rs.graph
}

// rows computes every job's row; building tells which derivations have
// streamed a live log.
func (rs *runState) rows(building func(drv string) bool) []jobRow {
	ended := rs.verdict != nil
	// The planner restarts no job of a run that was cancelled (at its
	// deadline too): its builders would refuse to build for it.
	restartable := ended && rs.cancel == nil
	rows := make([]jobRow, len(rs.jobs))
	for i, j := range rs.jobs {
		r := jobRow{Attr: j.attr, Drv: j.drv, DrvBase: bus.DrvBase(j.drv), System: j.system}
		if res := rs.results[j.drv]; res != nil {
			r.Builder, r.DurationMs = res.GetBuilder(), res.GetDurationMs()
		}
		switch o := rs.outcomes[j.attr]; {
		case o != nil:
			r.Status, r.Reason = jobStatusWord(o.GetStatus()), o.GetReason()
			if o.GetDurationMs() > 0 {
				r.DurationMs = o.GetDurationMs()
			}
			if o.GetFailure() == nixbuspb.FailureKind_FAILURE_KIND_CACHED {
				r.logRun, r.logDrv = earlierLog(o.GetLogKey())
			}
			r.Restartable = restartable && o.GetStatus() == nixbuspb.JobStatus_JOB_STATUS_FAILED && j.drv != "" &&
				o.GetFailure() != nixbuspb.FailureKind_FAILURE_KIND_EVAL && o.GetFailure() != nixbuspb.FailureKind_FAILURE_KIND_DEPENDENCY
		case j.evalErr != "":
			r.Status, r.Reason = jsFailed, j.evalErr
		case j.cached:
			r.Status = jsCached
		case rs.results[j.drv] != nil:
			res := rs.results[j.drv]
			r.Status, r.Reason = buildStatusWord(res.GetStatus()), res.GetError()
		}
		// A restarted job: the newest rebuild decides, or the request.
		if res := rs.results[j.drv]; res != nil && res.GetRestartSeq() > 0 {
			r.Status, r.Reason, r.Rebuilt = buildStatusWord(res.GetStatus()), res.GetError(), true
			r.Restartable = restartable && res.GetStatus() != nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
		}
		if seq := rs.restarts[j.drv]; seq > 0 && seq > rs.resultSeq[j.drv] {
			r.Status, r.Reason, r.Restartable, r.restartSeq = jsRestart, "restart requested", false, seq
			if building(j.drv) {
				r.Reason = "rebuilding"
			}
		}
		rows[i] = r
	}
	// What a job not started waits for: jobs not done that it reaches
	// directly or through derivations between jobs (the run's DAG, built
	// from what is read so far).
	var blockers [][]int32
	var more []bool
	for i, j := range rs.jobs {
		r := &rows[i]
		if r.Status != "" {
			continue
		}
		if rs.cancel != nil {
			r.Status, r.Reason = jsCancelled, "run cancelled"
			continue
		}
		if blockers == nil {
			blockers, more = rs.plan().Blockers(func(j int32) bool {
				return rows[j].Status == jsSucceeded || rows[j].Status == jsCached
			}, maxWaitingOn)
		}
		for _, b := range blockers[i] {
			r.WaitingOn = append(r.WaitingOn, rs.jobs[b].attr)
		}
		r.WaitingMore = more[i]
		switch {
		case len(r.WaitingOn) > 0:
			r.Status = jsWaiting
		case building(j.drv):
			r.Status = jsBuilding
		default:
			r.Status = jsQueued
		}
	}
	return rows
}

// runCache keeps the states of the runs looked at last, at most size.
type runCache struct {
	mu   sync.Mutex
	size int
	runs map[string]*runState
}

func newRunCache(size int) *runCache { return &runCache{size: size, runs: map[string]*runState{}} }

// errNoRun says the bus knows no such run.
var errNoRun = errors.New("no such run")

// look returns the run's state, brought up to date, locked: the caller
// unlocks it.
func (c *runCache) look(ctx context.Context, js jetstream.JetStream, id string) (*runState, error) {
	c.mu.Lock()
	rs, ok := c.runs[id]
	if !ok {
		rs = newRunState(id)
		if len(c.runs) >= c.size {
			var oldest *runState
			for _, r := range c.runs {
				if oldest == nil || r.used.Before(oldest.used) {
					oldest = r
				}
			}
			delete(c.runs, oldest.id)
		}
		c.runs[id] = rs
	}
	rs.used = time.Now()
	c.mu.Unlock()
	rs.mu.Lock()
	if err := rs.refresh(ctx, js); err != nil {
		rs.mu.Unlock()
		return nil, err
	}
	if rs.started == nil && len(rs.jobs) == 0 {
		rs.mu.Unlock()
		c.mu.Lock()
		if c.runs[id] == rs {
			delete(c.runs, id)
		}
		c.mu.Unlock()
		return nil, errNoRun
	}
	return rs, nil
}

func jobStatusWord(s nixbuspb.JobStatus) string {
	switch s {
	case nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED:
		return jsSucceeded
	case nixbuspb.JobStatus_JOB_STATUS_SKIPPED:
		return jsSkipped
	case nixbuspb.JobStatus_JOB_STATUS_CACHED:
		return jsCached
	case nixbuspb.JobStatus_JOB_STATUS_CANCELLED:
		return jsCancelled
	default:
		return jsFailed
	}
}

func buildStatusWord(s nixbuspb.BuildStatus) string {
	switch s {
	case nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED:
		return jsSucceeded
	case nixbuspb.BuildStatus_BUILD_STATUS_CANCELLED:
		return jsCancelled
	default:
		return jsFailed
	}
}

// earlierLog splits a log key (bus.LogKey) from the bus into its run and
// derivation, or "" when it is not one the pages could serve.
func earlierLog(key string) (run, drv string) {
	run, drv, ok := bus.SplitLogKey(key)
	if !ok || !bus.ValidRunID(run) || !drvBaseRe.MatchString(drv) {
		return "", ""
	}
	return run, drv
}
