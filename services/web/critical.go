package web

import (
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// runPlan is the run's DAG as the planner builds it (pkg/dag): the jobs
// and the derivation graph of its GraphChunks (plus the deprecated
// per-job DependsOn of older runs), in which a derivation between jobs
// weighs nothing, so paths through it are paths between jobs.
func runPlan(jobs []job, chunks []*nixbuspb.GraphChunk) *dag.Plan {
	djobs := make([]dag.Job, len(jobs))
	for i, j := range jobs {
		djobs[i] = dag.Job{Attr: j.attr, Drv: j.drv, System: j.system, Cached: j.cached, EvalError: j.evalErr, DependsOn: j.deps}
	}
	var g dag.Graph
	g.Drvs, g.Edges = bus.AssembleGraph(chunks)
	return dag.New(djobs, g)
}

// critical is what the run page shows of a run's critical path. For a run
// that ended: the chain of jobs whose build times add up to the longest
// path through the DAG (its duration with unlimited builders). For a run
// still going: the longest chain of jobs not yet done, in the order they
// must build: what the run waits on, starting with what builds now.
type critical struct {
	Ended   bool
	TotalMs int64 // ended: the path's build time
	Steps   []jobRow
	More    int // steps left out of Steps
}

// maxCriticalSteps bounds the steps a run page lists.
const maxCriticalSteps = 50

// criticalPath computes it from the run's rows (as rows returned them).
func (rs *runState) criticalPath(rows []jobRow) *critical {
	if rs.evalDone == nil || len(rows) != len(rs.jobs) {
		return nil // the graph is not all there yet
	}
	c := &critical{Ended: rs.verdict != nil}
	weight := func(i int32) int64 { return rows[i].DurationMs }
	if !c.Ended {
		weight = func(i int32) int64 {
			switch rows[i].Status {
			case jsBuilding, jsQueued, jsWaiting, jsRestart:
				return 1
			}
			return 0
		}
	}
	path, total := rs.plan().Longest(weight)
	if len(path) == 0 {
		return nil
	}
	if c.Ended {
		c.TotalMs = total
	}
	for _, i := range path {
		if len(c.Steps) == maxCriticalSteps {
			c.More = len(path) - maxCriticalSteps
			break
		}
		c.Steps = append(c.Steps, rows[i])
	}
	return c
}
