package web

import (
	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// depGraph is a run's derivation graph as the run page needs it: every job
// derivation and the non-job derivations between them (the GraphChunks),
// plus the deprecated per-job DependsOn of older runs. A non-job
// derivation weighs nothing: a job waits for the jobs reachable from it
// through them, so paths through the whole graph are paths between jobs,
// found in time linear in derivations plus edges however dense the graph.
type depGraph struct {
	jobNode []int32 // per job of the run: its node, -1 without a derivation
	isJob   []bool  // per node
	// deps of node n (what it waits for): deps[depStart[n]:depStart[n+1]].
	depStart []int32
	deps     []int32
	order    []int32 // nodes, each after all it waits for; cycles left out
}

// newDepGraph builds the graph of jobs and chunks.
func newDepGraph(jobs []job, chunks []*nixbuspb.GraphChunk) *depGraph {
	drvs, edges := bus.AssembleGraph(chunks)
	index := make(map[string]int32, len(jobs)+len(drvs))
	g := &depGraph{jobNode: make([]int32, len(jobs))}
	node := func(drv string) int32 {
		n, ok := index[drv]
		if !ok {
			n = int32(len(g.isJob))
			index[drv] = n
			g.isJob = append(g.isJob, false)
		}
		return n
	}
	for i, j := range jobs {
		g.jobNode[i] = -1
		if j.drv != "" && j.evalErr == "" {
			g.jobNode[i] = node(j.drv)
			g.isJob[g.jobNode[i]] = true
		}
	}
	gnode := make([]int32, len(drvs))
	for k, d := range drvs {
		gnode[k] = -1
		if d != "" {
			gnode[k] = node(d)
		}
	}
	var from, to []int32
	for k := 0; k+1 < len(edges); k += 2 {
		u, v := edges[k], edges[k+1]
		if u < 0 || v < 0 || int(u) >= len(gnode) || int(v) >= len(gnode) || gnode[u] < 0 || gnode[v] < 0 {
			continue
		}
		from, to = append(from, gnode[u]), append(to, gnode[v])
	}
	for i, j := range jobs {
		for _, d := range j.deps {
			if m, ok := index[d]; ok && g.jobNode[i] >= 0 {
				from, to = append(from, g.jobNode[i]), append(to, m)
			}
		}
	}
	nodes := int32(len(g.isJob))
	g.depStart, g.deps = csr(nodes, from, to)
	userStart, users := csr(nodes, to, from)
	// Kahn's order: a node once every node it waits for is in.
	left := make([]int32, nodes)
	g.order = make([]int32, 0, nodes)
	for n := range nodes {
		left[n] = g.depStart[n+1] - g.depStart[n]
		if left[n] == 0 {
			g.order = append(g.order, n)
		}
	}
	for k := 0; k < len(g.order); k++ {
		for _, u := range users[userStart[g.order[k]]:userStart[g.order[k]+1]] {
			if left[u]--; left[u] == 0 {
				g.order = append(g.order, u)
			}
		}
	}
	return g
}

// csr groups the edges from[k] -> to[k] by from: out[start[n]:start[n+1]]
// are the ends of n's edges.
func csr(n int32, from, to []int32) (start, out []int32) {
	start = make([]int32, n+1)
	for _, f := range from {
		start[f+1]++
	}
	for k := range n {
		start[k+1] += start[k]
	}
	out = make([]int32, len(from))
	fill := append([]int32(nil), start[:n]...)
	for k, f := range from {
		out[fill[f]] = to[k]
		fill[f]++
	}
	return start, out
}

// longest is the heaviest path through the graph, a node weighing the most
// of its jobs' weights (weight(i) for job i): the jobs on it, in the order
// they build (each waits for the one before), that weigh anything, and
// their total.
func (g *depGraph) longest(weight func(job int) int64) (path []int, total int64) {
	nodes := len(g.isJob)
	w := make([]int64, nodes)
	jobOf := make([]int32, nodes)
	for n := range jobOf {
		jobOf[n] = -1
	}
	for i, n := range g.jobNode {
		if n < 0 {
			continue
		}
		if jobOf[n] < 0 {
			jobOf[n] = int32(i)
		}
		w[n] = max(w[n], weight(i))
	}
	dist := make([]int64, nodes)
	prev := make([]int32, nodes)
	end := int32(-1)
	for _, n := range g.order {
		prev[n] = -1
		for _, d := range g.deps[g.depStart[n]:g.depStart[n+1]] {
			if prev[n] < 0 || dist[d] > dist[prev[n]] {
				prev[n] = d
			}
		}
		if prev[n] >= 0 {
			dist[n] = dist[prev[n]]
		}
		dist[n] += w[n]
		if end < 0 || dist[n] > dist[end] {
			end = n
		}
	}
	if end < 0 || dist[end] == 0 {
		return nil, 0
	}
	for n := end; n >= 0; n = prev[n] {
		if w[n] > 0 {
			path = append(path, int(jobOf[n]))
		}
	}
	for i, j := 0, len(path)-1; i < j; i, j = i+1, j-1 {
		path[i], path[j] = path[j], path[i]
	}
	return path, dist[end]
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
	if rs.graph == nil {
		rs.graph = newDepGraph(rs.jobs, rs.chunks)
	}
	c := &critical{Ended: rs.verdict != nil}
	weight := func(i int) int64 { return rows[i].DurationMs }
	if !c.Ended {
		weight = func(i int) int64 {
			switch rows[i].Status {
			case jsBuilding, jsQueued, jsWaiting, jsRestart:
				return 1
			}
			return 0
		}
	}
	path, total := rs.graph.longest(weight)
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
