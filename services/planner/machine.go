package planner

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	"nixbus.dev/nixbus/pkg/prom"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// runMachine is the planner's state machine: every unfinished run, owned by
// the one goroutine that reads the runs stream in order (handler.go hands
// it each message). Everything it publishes for a run follows from that
// run's messages and their order alone, so a replay publishes the same
// messages with the same ids, which JetStream keeps once.
//
// A run moves through these states (runState):
//
//	collecting  from its RunStarted: its jobs and graph chunks are kept
//	            (job, graphChunk) until EvalDone has come and so has all
//	            it counts (evaluated, maybePlan).
//	planning    its DAG is built in the background (maybePlan); results
//	            read meanwhile wait in r.early.
//	building    its plan is installed (install): build results move it on
//	            (result, apply), and what it produces waits in r.backlog
//	            to be emitted in turns (emit.go), the verdict last, once
//	            the plan is done and everything is out.
//	finished    its verdict is published and the run forgotten (finish):
//	            from any state, by a Cancel, a newer patchset (supersede),
//	            an evaluation error or the run deadline (deadlines.go). A
//	            RestartJob may reopen it, building again (restart.go).
//
// Planning a large run takes long enough (about 0.1 s per 100,000 jobs, and
// as long again to publish its first releases) to hold up every other run,
// so a run's DAG is built in the background and what it produces is
// published in chunks, taking turns with the other runs' messages.
type runMachine struct {
	s       *Service
	out     *outbox
	reports jetstream.Stream // where verdicts are: a run with one is finished
	runs    map[string]*run
	changes map[changeKey]changeRun
	lastSeq uint64
	seen    map[string]time.Time // system -> last heartbeat of a builder
	since   time.Time            // when this planner started
	ev      dag.Events
	planned chan planned // plans built in the background
	spawn   func(func()) // runs a background task the service waits for
	busy    []*run       // runs with a backlog, served in turn
	ended   endedRuns    // runs this planner gave a verdict lately
	fails   *failCache   // the failed-build cache (nil: disabled)
}

type changeKey struct {
	project string
	change  int64
}

type run struct {
	id        string
	seq       uint64 // stream sequence of its RunStarted
	change    *nixbuspb.ChangeEvent
	startedMs int64
	startAt   time.Time   // when its RunStarted was stored: the deadline counts from it
	expired   string      // why it was ended at its deadline, if it was
	lastAt    time.Time   // time of the last message that moved the run on
	hdr       nats.Header // trace context, carried onto everything published
	planTrace string      // traceparent of the plan span, which builds link to
	jobs      []dag.Job
	graph     []*nixbuspb.GraphChunk // the derivation graph between the jobs
	chunkSeen map[int32]struct{}     // indexes in graph
	outputs   []map[string]string
	attrs     map[string]struct{}
	evalDone  *nixbuspb.EvalDone
	planning  bool          // the plan is being built in the background
	early     []earlyResult // results read while planning, applied after
	plan      *dag.Plan
	backlog   backlog        // produced by the plan, not yet published
	busy      bool           // in runMachine.busy
	building  map[string]int // per system
	failed    []*nixbuspb.JobOutcome
	// failedJobs are the jobs failed lists, index for index.
	failedJobs []int32
	listBytes  int
	// rev is the stream sequence of the newest RestartJob applied to a
	// run reopened by one (restart.go); 0 while the run is on its first
	// verdict. Its outcomes and verdict carry it in their message ids.
	rev uint64
	// expect is, in a reopened run, the restart_seq each derivation
	// released since carries: other results of it are stale.
	expect map[string]uint64
	// failedLogs are the log keys of failed jobs, kept while the run is
	// restored and after (restart.go): a job a restart skips again links
	// the log of a failure decided before.
	failedLogs map[int32]string
	// failedBefore are the derivations of its jobs that failed in an
	// earlier build (failed-build cache hits), by drv.
	failedBefore map[string]*nixbuspb.FailedBuild
}

// runState is where an unfinished run stands (see runMachine).
type runState uint8

// The states of an unfinished run; a finished one is in no runMachine.runs.
const (
	runCollecting runState = iota
	runPlanning
	runBuilding
)

func (r *run) state() runState {
	switch {
	case r.planning:
		return runPlanning
	case r.plan != nil:
		return runBuilding
	}
	return runCollecting
}

type earlyResult struct {
	m     *nixbuspb.BuildResult
	at    time.Time
	trace string // traceparent of the build that sent m
}

// planned is a plan built in the background with what its start produced.
type planned struct {
	r     *run
	plan  *dag.Plan
	ev    dag.Events
	start time.Time
	took  time.Duration
}

func newRunMachine(s *Service, out *outbox, reports jetstream.Stream, spawn func(func())) *runMachine {
	return &runMachine{s: s, out: out, reports: reports, runs: map[string]*run{}, seen: map[string]time.Time{}, since: s.now(), changes: map[changeKey]changeRun{},
		planned: make(chan planned, 16), spawn: spawn}
}

// checkpoint is the lowest stream sequence a restart must read from.
func (st *runMachine) checkpoint() uint64 {
	low := st.lastSeq + 1
	for _, r := range st.runs {
		low = min(low, r.seq)
	}
	return low
}

func (st *runMachine) started(ctx context.Context, runID string, seq uint64, m *nixbuspb.RunStarted, h nats.Header, at time.Time) error {
	if _, ok := st.runs[runID]; ok {
		return nil
	}
	if !bus.ValidRunID(runID) {
		st.s.logger.Error("drop run with a malformed id", "run", bus.Truncate(runID, 200))
		return nil
	}
	// A finished run stays finished however old: once JetStream forgot
	// the message ids (its duplicate window), replaying it would publish
	// its outcomes, verdict and builds again.
	if done, err := st.finished(ctx, runID); err != nil || done {
		return err
	}
	r := &run{id: runID, seq: seq, change: m.GetChange(), startedMs: m.GetStartedUnixMs(), startAt: at,
		attrs: map[string]struct{}{}, building: map[string]int{}, hdr: bus.SpanHeader(bus.TraceOf(h))}
	st.runs[runID] = r
	st.s.metrics.activeRuns.Inc()
	st.s.logger.Info("run started", "run", runID, "change", r.change.GetChange(), "patchset", r.change.GetPatchset())
	return st.supersede(ctx, r, at)
}

// supersede cancels the older of two runs of one Gerrit change: a newer
// patchset (or a later run of the same one) cancels an unfinished older
// run, and a run older than the newest known is cancelled at once.
func (st *runMachine) supersede(ctx context.Context, r *run, at time.Time) error {
	c := r.change
	if c.GetChange() <= 0 {
		return nil // branch and local runs get no vote
	}
	key := changeKey{c.GetProject(), c.GetChange()}
	cur := changeRun{patchset: c.GetPatchset(), seq: r.seq, run: r.id}
	prev, ok, err := st.latest(ctx, key)
	switch {
	case err != nil:
		return err
	case ok && prev.run == r.id: // read again on a replay
		st.changes[key] = cur
	case !ok || cur.newerThan(prev):
		if err := st.setLatest(ctx, key, cur); err != nil {
			return err
		}
		if old, ok := st.runs[prev.run]; ok && old != r {
			return st.requestCancel(ctx, old, r.id, supersededReason(old.change.GetPatchset(), cur.patchset), at)
		}
	default:
		return st.requestCancel(ctx, r, prev.run, supersededReason(cur.patchset, prev.patchset), at)
	}
	return nil
}

// finished reports whether run has its verdict stored, retrying until the
// stream answers or ctx ends.
func (st *runMachine) finished(ctx context.Context, runID string) (bool, error) {
	v, err := st.storedVerdict(ctx, runID)
	if v != nil {
		st.s.logger.Debug("skip finished run", "run", runID)
	}
	return v != nil, err
}

// storedVerdict is run's newest verdict on the reports stream (nil: none),
// retrying until the stream answers or ctx ends.
func (st *runMachine) storedVerdict(ctx context.Context, runID string) (v *jetstream.RawStreamMsg, err error) {
	err = untilDone(ctx, st.s.logger, "look up verdict", func() error {
		m, err := st.reports.GetLastMsgForSubject(ctx, bus.VerdictSubject(runID))
		switch {
		case bus.IsNotFound(err):
			v = nil
		case err != nil:
			return err
		default:
			v = m
		}
		return nil
	})
	return v, err
}

func supersededReason(old, newer int32) string {
	if old == newer {
		return fmt.Sprintf("superseded by a later run of patchset %d", newer)
	}
	return fmt.Sprintf("superseded by patchset %d", newer)
}

// requestCancel publishes a Cancel (builders stop the run's builds) and
// ends the run now; the Cancel read back later finds no run.
func (st *runMachine) requestCancel(ctx context.Context, r *run, by, reason string, at time.Time) error {
	m := &nixbuspb.Cancel{RunId: r.id, Reason: reason, SupersededBy: by}
	if err := st.send(ctx, r, bus.RunSubject(r.id, bus.RunCancelKind), bus.MsgIDCancel(r.id), m); err != nil {
		return err
	}
	return st.cancel(ctx, r, by, at)
}

func (st *runMachine) job(ctx context.Context, runID string, m *nixbuspb.Job, at time.Time) error {
	r, ok := st.runs[runID]
	if !ok || r.state() != runCollecting {
		return nil // a finished run, or a job after planning began
	}
	if !r.addJob(m) {
		return nil
	}
	if r.evalDone != nil {
		r.lastAt = at
		st.maybePlan(ctx, r)
	}
	return nil
}

// graphChunk keeps one chunk of the run's derivation graph until planning.
func (st *runMachine) graphChunk(ctx context.Context, runID string, m *nixbuspb.GraphChunk, at time.Time) error {
	r, ok := st.runs[runID]
	if !ok || r.state() != runCollecting {
		return nil
	}
	if !r.addChunk(m) {
		return nil
	}
	if r.evalDone != nil {
		r.lastAt = at
		st.maybePlan(ctx, r)
	}
	return nil
}

// addJob keeps job m of collecting run r, once per attribute; it reports
// false for one kept before.
func (r *run) addJob(m *nixbuspb.Job) bool {
	if _, dup := r.attrs[m.GetAttr()]; dup {
		return false
	}
	r.attrs[m.GetAttr()] = struct{}{}
	r.jobs = append(r.jobs, newJob(m))
	r.outputs = append(r.outputs, m.GetOutputs())
	return true
}

// addChunk keeps graph chunk m of collecting run r, once per index; it
// reports false for one kept before.
func (r *run) addChunk(m *nixbuspb.GraphChunk) bool {
	if _, dup := r.chunkSeen[m.GetIndex()]; dup {
		return false
	}
	if r.chunkSeen == nil {
		r.chunkSeen = map[int32]struct{}{}
	}
	r.chunkSeen[m.GetIndex()] = struct{}{}
	r.graph = append(r.graph, m)
	return true
}

func (st *runMachine) evaluated(ctx context.Context, runID string, m *nixbuspb.EvalDone, at time.Time) error {
	r, ok := st.runs[runID]
	if !ok || r.evalDone != nil {
		return nil
	}
	r.evalDone, r.lastAt = m, at
	if m.GetError() != "" {
		return st.finish(ctx, r, nixbuspb.RunStatus_RUN_STATUS_FAILED, "", at)
	}
	st.maybePlan(ctx, r)
	return nil
}

// collected reports whether r has every job and graph chunk its EvalDone
// announced (false before EvalDone).
func (r *run) collected() bool {
	return r.evalDone != nil && int64(len(r.jobs)) >= r.evalDone.GetJobCount() && len(r.graph) >= int(r.evalDone.GetGraphChunks())
}

// maybePlan starts planning once every job and graph chunk EvalDone
// announced has arrived (the evaluator may retry a publish after
// publishing EvalDone). The background task owns r.jobs and r.graph until
// the plan comes back to install.
func (st *runMachine) maybePlan(ctx context.Context, r *run) {
	if !r.collected() {
		st.s.logger.Warn("waiting for jobs or the derivation graph", "run", r.id, "jobs", len(r.jobs), "want_jobs", r.evalDone.GetJobCount(),
			"graph_chunks", len(r.graph), "want_graph_chunks", r.evalDone.GetGraphChunks())
		return
	}
	r.planning, r.attrs = true, nil
	st.markFailedBefore(r, time.Time{})
	jobs, chunks := r.jobs, r.graph
	r.graph, r.chunkSeen = nil, nil
	st.spawn(func() {
		if st.s.beforePlan != nil {
			st.s.beforePlan(ctx, r.id)
		}
		t0 := time.Now()
		p := planned{r: r, plan: newPlan(jobs, chunks), start: t0}
		p.plan.Start(&p.ev)
		p.took = time.Since(t0)
		select {
		case st.planned <- p:
		case <-ctx.Done():
		}
	})
}

// newPlan builds the DAG of jobs and the derivation graph in chunks. The
// jobs' DependsOn are dropped: only dag.New reads them.
func newPlan(jobs []dag.Job, chunks []*nixbuspb.GraphChunk) *dag.Plan {
	var g dag.Graph
	g.Drvs, g.Edges = bus.AssembleGraph(chunks)
	p := dag.New(jobs, g)
	for i := range jobs {
		jobs[i].DependsOn = nil
	}
	return p
}

// install adopts a plan built in the background, applies the results read
// meanwhile (only a replay has any), and starts publishing.
func (st *runMachine) install(ctx context.Context, p planned) error {
	r := p.r
	if st.runs[r.id] != r {
		return nil // cancelled while planning; its memory goes with p
	}
	r.planning, r.plan = false, p.plan
	st.s.metrics.planning.Observe(p.took.Seconds())
	// The plan span sits under the run's trace and stands for building the
	// DAG only. What the run publishes from now on keeps the run's own
	// context: builds link to the plan (and to the build that released
	// them) rather than nesting under a span that ended long before.
	c := p.plan.Counts()
	_, span := st.s.tracer.Start(bus.ExtractTrace(ctx, r.hdr), "plan", trace.WithTimestamp(p.start),
		trace.WithAttributes(bus.AttrRun.String(r.id), attribute.Int("nixbus.jobs", len(r.jobs)),
			attribute.Int("nixbus.released", len(p.ev.Releases)), attribute.Int("nixbus.cached", c.Cached),
			attribute.Int("nixbus.failed", c.Failed)))
	span.End(trace.WithTimestamp(p.start.Add(p.took)))
	r.planTrace = bus.TraceParent(span.SpanContext())
	st.s.logger.Info("run planned", "run", r.id, "jobs", len(r.jobs), "released", len(p.ev.Releases), "duration", p.took)
	st.enqueue(r, &p.ev, nil, "")
	for _, e := range r.early {
		if st.apply(r, e.m, e.at, e.trace) {
			st.remember(ctx, e.m, e.at)
		}
	}
	r.early = nil
	return st.flush(ctx, r)
}

// result applies a build result; built is the traceparent of the build's
// span (empty when untraced), which the builds it releases link to.
func (st *runMachine) result(ctx context.Context, runID string, m *nixbuspb.BuildResult, at time.Time, built string) error {
	t0 := time.Now()
	r, ok := st.runs[runID]
	switch {
	case !ok:
		return nil
	case r.state() == runPlanning:
		r.early = append(r.early, earlyResult{m, at, built})
		return nil
	case r.state() == runCollecting || !st.apply(r, m, at, built):
		return nil
	}
	st.remember(ctx, m, at)
	err := st.flush(ctx, r)
	st.s.metrics.resultToNext.Observe(time.Since(t0).Seconds())
	return err
}

// apply records a build result in r's plan and queues what follows from it.
// It reports false for a result that changes nothing (a duplicate).
func (st *runMachine) apply(r *run, m *nixbuspb.BuildResult, at time.Time, built string) bool {
	st.ev.Reset()
	if m.GetRestartSeq() != r.expect[m.GetDrvPath()] {
		// A result of another attempt than the one awaited: a restart's
		// rebuild in a run on its first verdict, or a run's first build
		// in one reopened by a restart.
		st.s.logger.Debug("ignore result of another attempt", "run", r.id, "drv", m.GetDrvPath(), "restart_seq", m.GetRestartSeq())
		return false
	}
	var applied bool
	switch m.GetStatus() {
	case nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED:
		applied = r.plan.Succeed(m.GetDrvPath(), &st.ev)
	case nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT:
		applied = r.plan.Fail(m.GetDrvPath(), dag.TimeoutFailure, reasonOf(m, "build timed out"), &st.ev)
	default:
		applied = r.plan.Fail(m.GetDrvPath(), dag.BuildFailure, reasonOf(m, "build failed"), &st.ev)
	}
	if !applied {
		st.s.logger.Debug("ignore result", "run", r.id, "drv", m.GetDrvPath())
		return false
	}
	r.lastAt = at
	// The first outcome is the built derivation's own.
	sys := r.jobs[st.ev.Outcomes[0].Job].System
	r.building[sys]--
	st.s.metrics.building.WithLabelValues(sys).Dec()
	st.enqueue(r, &st.ev, m, built)
	return true
}

func reasonOf(m *nixbuspb.BuildResult, fallback string) string {
	if m.GetError() != "" {
		return m.GetError()
	}
	if m.GetStatus() == nixbuspb.BuildStatus_BUILD_STATUS_CANCELLED {
		return "build cancelled"
	}
	return fallback
}

func (st *runMachine) cancel(ctx context.Context, r *run, by string, at time.Time) error {
	return st.finish(ctx, r, nixbuspb.RunStatus_RUN_STATUS_CANCELLED, by, at)
}

// finish publishes the run's verdict and forgets the run.
func (st *runMachine) finish(ctx context.Context, r *run, status nixbuspb.RunStatus, supersededBy string, at time.Time) error {
	v := verdictMsg(r, status, supersededBy, at)
	v.Revision = r.rev
	if err := st.send(ctx, r, bus.VerdictSubject(r.id), bus.MsgIDVerdictRevision(r.id, r.rev), v); err != nil {
		return err
	}
	st.ended.add(r.id, r.rev)
	for sys, n := range r.building {
		st.s.metrics.building.WithLabelValues(sys).Sub(float64(n))
	}
	delete(st.runs, r.id)
	st.forget(r)
	r.backlog, r.early, r.jobs, r.outputs, r.plan, r.graph, r.failedBefore = backlog{}, nil, nil, nil, nil, nil, nil
	st.s.metrics.activeRuns.Dec()
	st.s.metrics.verdicts.WithLabelValues(prom.EnumLabel(status)).Inc()
	st.s.logger.Info("run finished", "run", r.id, "change", r.change.GetChange(), "patchset", r.change.GetPatchset(),
		"status", status.String(), "revision", r.rev, "jobs", v.JobCount, "failed", v.FailedCount, "skipped", v.SkippedCount)
	return nil
}
