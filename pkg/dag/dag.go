// Package dag is the planner's scheduling core (the planner's and `nixbus plan`'s,
// through internal/replay): one run's jobs as a graph of
// derivations, with the original CI's rules.
//
//   - A job is released for building once every job it depends on has
//     succeeded or is cached.
//   - A cached job is not built: it is reported cached once its dependencies
//     are done.
//   - When a job fails, every job depending on it, directly or transitively,
//     is skipped with "dependency <attr> failed" (cached jobs included).
//   - Evaluation errors are failures; a run succeeds only if nothing failed.
//   - A derivation that failed in an earlier build (Job.FailedBefore) fails
//     at once without building.
//
// Several attributes may share one derivation: it is built once and each
// attribute gets its own outcome. Building the plan is linear in jobs plus
// edges, and release, completion and failure propagation cost O(1) amortised
// per job and edge: everything is int-indexed arrays.
package dag

import (
	"fmt"
)

// Job is one job of a run, as the evaluator described it.
type Job struct {
	Attr   string
	Drv    string
	System string
	// Cached jobs are not built.
	Cached bool
	// EvalError makes the job a failure from the start.
	EvalError string
	// FailedBefore, when set, is why the job's derivation failed in an
	// earlier build (a failed-build cache hit): the job fails at Start
	// with CachedFailure and is not built.
	FailedBefore string
	// DependsOn are derivation paths of jobs this one waits for; paths that
	// are not jobs of the run are ignored.
	DependsOn []string
}

// Status is where a job (or its derivation) stands.
type Status uint8

// Statuses. Pending and Building are the only ones that are not final.
const (
	Pending Status = iota
	Building
	Succeeded
	Failed
	Skipped
	Cached
)

var statusNames = [...]string{"pending", "building", "succeeded", "failed", "skipped", "cached"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", s)
}

// Terminal reports whether s is final.
func (s Status) Terminal() bool { return s >= Succeeded }

// Failure says why a job failed or was skipped.
type Failure uint8

// Failures.
const (
	NoFailure Failure = iota
	BuildFailure
	EvalFailure
	DependencyFailure
	TimeoutFailure
	// CachedFailure: the derivation failed in an earlier build.
	CachedFailure
)

// Outcome is the final word on one job.
type Outcome struct {
	// Job indexes the jobs given to New.
	Job     int32
	Status  Status
	Failure Failure
	Reason  string
	// Cause is, for a skipped job, the job whose failure skipped it (the
	// one its Reason names); zero otherwise.
	Cause int32
}

// Release asks for one derivation to be built.
type Release struct {
	Drv    string
	System string
	// Jobs are the attributes sharing the derivation (indexes into the jobs
	// given to New), in job order. The slice belongs to the plan.
	Jobs []int32
}

// Events collects what a step of the plan produced. Reuse one with Reset.
type Events struct {
	Releases []Release
	Outcomes []Outcome
}

// Reset empties e, keeping its memory.
func (e *Events) Reset() {
	e.Releases = e.Releases[:0]
	e.Outcomes = e.Outcomes[:0]
}

// Counts are how many jobs (attributes) are in each status.
type Counts struct {
	Pending, Building, Succeeded, Failed, Skipped, Cached int
}

// Plan is one run's DAG. It is not safe for concurrent use.
type Plan struct {
	jobs  []Job
	index map[string]int32 // drv -> node
	// node -> its jobs: nodeJobs[jobStart[n]:jobStart[n+1]]
	jobStart []int32
	nodeJobs []int32
	// node -> nodes depending on it: users[userStart[n]:userStart[n+1]]
	userStart []int32
	users     []int32
	pending   []int32 // unfinished dependencies per node
	status    []Status
	cached    []bool
	evalNode  []bool
	counts    Counts
	jobNode   []int32
	queue     []int32
	stack     []int32
	started   bool
}

// Graph is the derivation graph between a run's jobs: job derivations and
// the non-job derivations through which one job reaches another (see
// drv.Reduce). A non-job derivation is never built: it is done once all its
// inputs are, and a failure skips what depends on it, so a job waits for
// exactly the jobs reachable from it through non-job derivations, in time
// linear in derivations plus edges.
type Graph struct {
	Drvs []string
	// Edges are pairs of indexes into Drvs, flattened: Edges[2k] waits for
	// Edges[2k+1]. Pairs out of range are ignored.
	Edges []int32
}

// New builds the plan of jobs, ordered by g and by the jobs' DependsOn, in
// time linear in jobs, derivations and edges. The plan keeps jobs; the
// caller must not change them, except that DependsOn is only read here and
// may be dropped afterwards to free memory (as may g).
func New(jobs []Job, g Graph) *Plan {
	p := &Plan{jobs: jobs, index: make(map[string]int32, len(jobs)+len(g.Drvs))}
	jobNode := make([]int32, len(jobs))
	nodes := int32(0)
	for i := range jobs {
		j := &jobs[i]
		if j.EvalError != "" || j.Drv == "" {
			p.evalNode = append(p.evalNode, true)
			p.cached = append(p.cached, false)
			jobNode[i] = nodes
			nodes++
			continue
		}
		n, ok := p.index[j.Drv]
		if !ok {
			n = nodes
			nodes++
			p.index[j.Drv] = n
			p.evalNode = append(p.evalNode, false)
			p.cached = append(p.cached, j.Cached)
		} else if !j.Cached {
			// Aliases disagreeing on the cache: build to be sure.
			p.cached[n] = false
		}
		jobNode[i] = n
	}
	p.jobNode = jobNode
	// The graph's other derivations are nodes without jobs.
	gnode := make([]int32, len(g.Drvs))
	for k, d := range g.Drvs {
		n, ok := p.index[d]
		if !ok {
			n = nodes
			nodes++
			p.index[d] = n
		}
		gnode[k] = n
	}
	p.evalNode = append(p.evalNode, make([]bool, int(nodes)-len(p.evalNode))...)
	p.cached = append(p.cached, make([]bool, int(nodes)-len(p.cached))...)
	p.jobStart, p.nodeJobs = group(nodes, jobNode)

	// Dependency edges (n waits for m), grouped by n by a counting sort,
	// in the order given (DependsOn, then the graph's edges), and
	// de-duplicated: aliases may repeat them, and DependsOn may repeat
	// what the graph says. Nothing is built per edge but depEnds and
	// users: on a dense graph edges outnumber nodes tenfold.
	var depFrom, depTo []int32
	for n := range nodes {
		if p.evalNode[n] {
			continue
		}
		for _, j := range p.nodeJobs[p.jobStart[n]:p.jobStart[n+1]] {
			for _, d := range jobs[j].DependsOn {
				if m, ok := p.index[d]; ok {
					depFrom, depTo = append(depFrom, n), append(depTo, m)
				}
			}
		}
	}
	edges := func(visit func(n, m int32)) {
		for k, n := range depFrom {
			visit(n, depTo[k])
		}
		for k := 0; k+1 < len(g.Edges); k += 2 {
			u, v := g.Edges[k], g.Edges[k+1]
			if u < 0 || v < 0 || int(u) >= len(gnode) || int(v) >= len(gnode) {
				continue
			}
			visit(gnode[u], gnode[v])
		}
	}
	depStart := make([]int32, nodes+1)
	edges(func(n, _ int32) { depStart[n+1]++ })
	for n := range nodes {
		depStart[n+1] += depStart[n]
	}
	depEnds := make([]int32, depStart[nodes])
	fill := append([]int32(nil), depStart[:nodes]...)
	edges(func(n, m int32) {
		depEnds[fill[n]] = m
		fill[n]++
	})
	// De-duplicate in place: what is kept never passes what is read.
	mark := fill
	clear(mark)
	kept := int32(0)
	for n := range nodes {
		first := kept
		for _, m := range depEnds[depStart[n]:depStart[n+1]] {
			if m == n || mark[m] == n+1 || p.evalNode[m] {
				continue
			}
			mark[m] = n + 1
			depEnds[kept] = m
			kept++
		}
		depStart[n] = first
	}
	depStart[nodes] = kept
	depEnds = depEnds[:kept]
	p.pending = make([]int32, nodes)
	for n := range nodes {
		p.pending[n] = depStart[n+1] - depStart[n]
	}
	// users of m: every n with an edge n -> m, grouped by m, n ascending.
	p.userStart = make([]int32, nodes+1)
	for _, m := range depEnds {
		p.userStart[m+1]++
	}
	for n := range nodes {
		p.userStart[n+1] += p.userStart[n]
	}
	p.users = make([]int32, len(depEnds))
	copy(fill, p.userStart[:nodes])
	for n := range nodes {
		for _, m := range depEnds[depStart[n]:depStart[n+1]] {
			p.users[fill[m]] = n
			fill[m]++
		}
	}
	p.status = make([]Status, nodes)
	p.counts.Pending = len(jobs)
	return p
}

// group returns, for keys in [0, n), the indexes of vals grouped by key
// (stable): out[start[k]:start[k+1]] are the i with key[i] == k.
func group(n int32, key []int32) (start, out []int32) {
	start = make([]int32, n+1)
	for _, k := range key {
		start[k+1]++
	}
	for k := range n {
		start[k+1] += start[k]
	}
	out = make([]int32, len(key))
	fill := append([]int32(nil), start[:n]...)
	for i, k := range key {
		out[fill[k]] = int32(i)
		fill[k]++
	}
	return start, out
}

// Jobs returns the jobs the plan was built from.
func (p *Plan) Jobs() []Job { return p.jobs }

// Counts returns how many jobs are in each status.
func (p *Plan) Counts() Counts { return p.counts }

// Done reports whether every job has its outcome.
func (p *Plan) Done() bool { return p.counts.Pending == 0 && p.counts.Building == 0 }

// Succeeded reports whether the run is done and nothing failed.
func (p *Plan) Succeeded() bool { return p.Done() && p.counts.Failed == 0 }

// Status returns the status of the job at index i.
func (p *Plan) Status(i int) Status { return p.status[p.jobNode[i]] }

// Start reports evaluation failures and releases (or reports cached) every
// job that waits for nothing. Jobs caught in a dependency cycle, which a
// real derivation graph cannot have, fail with "dependency cycle".
func (p *Plan) Start(ev *Events) {
	if p.started {
		return
	}
	p.started = true
	nodes := int32(len(p.status))
	for n := range nodes {
		if p.evalNode[n] {
			j := &p.jobs[p.nodeJobs[p.jobStart[n]]]
			reason := j.EvalError
			if reason == "" {
				reason = "no derivation"
			}
			p.finish(n, Failed, EvalFailure, reason, ev)
		}
	}
	// A derivation that failed before fails again at once, skipping what
	// depends on it (aliases share the node: the first one decides).
	for i := range p.jobs {
		if n := p.jobNode[i]; p.jobs[i].FailedBefore != "" && !p.evalNode[n] && p.status[n] == Pending {
			p.finish(n, Failed, CachedFailure, p.jobs[i].FailedBefore, ev)
		}
	}
	p.failCycles(ev)
	p.queue = p.queue[:0]
	for n := range nodes {
		if p.status[n] == Pending && p.pending[n] == 0 {
			p.queue = append(p.queue, n)
		}
	}
	p.drain(ev)
}

// failCycles fails the nodes a topological order cannot reach.
func (p *Plan) failCycles(ev *Events) {
	nodes := int32(len(p.status))
	order := p.topo()
	if len(order) == int(nodes) {
		return
	}
	ordered := make([]bool, nodes)
	for _, n := range order {
		ordered[n] = true
	}
	for n := range nodes {
		if !ordered[n] && p.status[n] == Pending {
			// Everything downstream of a cycle is unordered too: each
			// such job fails itself rather than being skipped.
			p.setStatus(n, Failed, DependencyFailure, "dependency cycle", ev)
		}
	}
}

// Succeed records that drv built. It returns false, changing nothing, when
// drv is not currently building (unknown, or a duplicate result).
func (p *Plan) Succeed(drv string, ev *Events) bool {
	n, ok := p.building(drv)
	if !ok {
		return false
	}
	p.finish(n, Succeeded, NoFailure, "", ev)
	p.release(n)
	p.drain(ev)
	return true
}

// Fail records that drv failed to build, and skips everything that depends
// on it. It returns false, changing nothing, when drv is not building.
func (p *Plan) Fail(drv string, f Failure, reason string, ev *Events) bool {
	n, ok := p.building(drv)
	if !ok {
		return false
	}
	p.finish(n, Failed, f, reason, ev)
	return true
}

// Retry builds drv again after its build failed (a restarted job): drv
// is released again, and every job its failure skipped waits for it
// again, unless another failure still skips it (those are reported again,
// naming that failure). It returns false, changing nothing, when drv is
// not a derivation whose build failed. It costs time linear in the graph.
func (p *Plan) Retry(drv string, ev *Events) bool {
	n, ok := p.index[drv]
	if !ok || p.status[n] != Failed || p.evalNode[n] || p.pending[n] != 0 || p.jobStart[n] == p.jobStart[n+1] {
		return false // unknown, not failed, an eval error or caught in a cycle
	}
	p.setStatus(n, Building, NoFailure, "", ev)
	first := &p.jobs[p.nodeJobs[p.jobStart[n]]]
	ev.Releases = append(ev.Releases, Release{Drv: first.Drv, System: first.System,
		Jobs: p.nodeJobs[p.jobStart[n]:p.jobStart[n+1]]})
	// What the failure skipped waits again.
	reset := 0
	stack := append(p.stack[:0], n)
	for len(stack) > 0 {
		m := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, u := range p.users[p.userStart[m]:p.userStart[m+1]] {
			if p.status[u] == Skipped {
				p.setStatus(u, Pending, NoFailure, "", ev)
				stack = append(stack, u)
				reset++
			}
		}
	}
	p.stack = stack[:0]
	if reset == 0 {
		return true
	}
	// Skip again what another failure still reaches: every failed job's
	// users, through what is skipped, once each.
	seen := make([]bool, len(p.status))
	for f := range int32(len(p.status)) {
		if p.status[f] == Failed && p.jobStart[f] != p.jobStart[f+1] {
			// (A derivation between jobs fails only in a cycle, with its users.)
			p.skipUsers(f, seen, ev)
		}
	}
	return true
}

func (p *Plan) building(drv string) (int32, bool) {
	n, ok := p.index[drv]
	if !ok || p.status[n] != Building {
		return 0, false
	}
	return n, true
}

// finish gives node n its final status and its jobs their outcomes; a
// failure skips every pending node depending on n, transitively.
func (p *Plan) finish(n int32, s Status, f Failure, reason string, ev *Events) {
	p.setStatus(n, s, f, reason, ev)
	if s != Failed && s != Skipped {
		return
	}
	p.skipUsers(n, nil, ev)
}

// skipUsers skips every pending node depending on n, transitively, naming
// n's (first) attribute as the failure in every skip. With seen (Retry),
// it also walks through nodes skipped already, each node once.
func (p *Plan) skipUsers(n int32, seen []bool, ev *Events) {
	cause := p.nodeJobs[p.jobStart[n]]
	skip := "dependency " + p.jobs[cause].Attr + " failed"
	stack := append(p.stack[:0], n)
	for len(stack) > 0 {
		m := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, u := range p.users[p.userStart[m]:p.userStart[m+1]] {
			switch {
			case seen != nil && seen[u]:
				continue
			case p.status[u] == Pending:
				first := len(ev.Outcomes)
				p.setStatus(u, Skipped, DependencyFailure, skip, ev)
				for k := first; k < len(ev.Outcomes); k++ {
					ev.Outcomes[k].Cause = cause
				}
			case seen == nil || p.status[u] != Skipped:
				continue
			}
			if seen != nil {
				seen[u] = true
			}
			stack = append(stack, u)
		}
	}
	p.stack = stack[:0]
}

func (p *Plan) setStatus(n int32, s Status, f Failure, reason string, ev *Events) {
	old := p.status[n]
	p.status[n] = s
	js := p.nodeJobs[p.jobStart[n]:p.jobStart[n+1]]
	p.add(old, -len(js))
	p.add(s, len(js))
	if !s.Terminal() {
		return
	}
	for _, j := range js {
		ev.Outcomes = append(ev.Outcomes, Outcome{Job: j, Status: s, Failure: f, Reason: reason})
	}
}

func (p *Plan) add(s Status, k int) {
	switch s {
	case Pending:
		p.counts.Pending += k
	case Building:
		p.counts.Building += k
	case Succeeded:
		p.counts.Succeeded += k
	case Failed:
		p.counts.Failed += k
	case Skipped:
		p.counts.Skipped += k
	case Cached:
		p.counts.Cached += k
	}
}

// release counts n as done for its users and queues those now ready.
func (p *Plan) release(n int32) {
	for _, u := range p.users[p.userStart[n]:p.userStart[n+1]] {
		if p.pending[u]--; p.pending[u] == 0 && p.status[u] == Pending {
			p.queue = append(p.queue, u)
		}
	}
}

// drain works through the ready queue: cached nodes are done at once (and
// may make more nodes ready), the others are released for building.
func (p *Plan) drain(ev *Events) {
	for k := 0; k < len(p.queue); k++ {
		n := p.queue[k]
		if p.status[n] != Pending {
			continue
		}
		if p.jobStart[n] == p.jobStart[n+1] {
			// A derivation between jobs: done once its inputs are.
			p.status[n] = Succeeded
			p.release(n)
			continue
		}
		if p.cached[n] {
			p.finish(n, Cached, NoFailure, "", ev)
			p.release(n)
			continue
		}
		p.setStatus(n, Building, NoFailure, "", ev)
		first := &p.jobs[p.nodeJobs[p.jobStart[n]]]
		ev.Releases = append(ev.Releases, Release{Drv: first.Drv, System: first.System,
			Jobs: p.nodeJobs[p.jobStart[n]:p.jobStart[n+1]]})
	}
	p.queue = p.queue[:0]
}
