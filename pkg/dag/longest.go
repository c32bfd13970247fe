package dag

import "slices"

// topo is every node of the plan after all it waits for (Kahn's order,
// from the users lists, whatever the plan's state); nodes caught in a
// dependency cycle are left out.
func (p *Plan) topo() []int32 {
	nodes := int32(len(p.status))
	left := make([]int32, nodes) // dependencies not yet in order
	for n := range nodes {
		for _, u := range p.users[p.userStart[n]:p.userStart[n+1]] {
			left[u]++
		}
	}
	order := make([]int32, 0, nodes)
	for n := range nodes {
		if left[n] == 0 {
			order = append(order, n)
		}
	}
	for k := 0; k < len(order); k++ {
		for _, u := range p.users[p.userStart[order[k]]:p.userStart[order[k]+1]] {
			if left[u]--; left[u] == 0 {
				order = append(order, u)
			}
		}
	}
	return order
}

// isJob reports whether node n is a job's derivation that evaluated (not a
// derivation between jobs, not an evaluation error).
func (p *Plan) isJob(n int32) bool { return p.jobStart[n] < p.jobStart[n+1] && !p.evalNode[n] }

// Longest is the heaviest path through the plan's DAG, a derivation
// weighing the most of its jobs' weights (weight(i) for job i, an index
// into the jobs given to New); a derivation between jobs and a job that
// did not evaluate weigh nothing. It returns the jobs on the path that
// weigh anything, one per derivation (its first), in the order they build
// (each waits for the one before), and the path's total weight. With
// durations as weights it is the run's critical path. Time is linear in
// derivations plus edges, whatever the plan's state; jobs caught in a
// dependency cycle are on no path.
func (p *Plan) Longest(weight func(job int32) int64) (jobs []int32, total int64) {
	nodes := int32(len(p.status))
	w := make([]int64, nodes)
	for n := range nodes {
		if p.isJob(n) {
			for _, j := range p.nodeJobs[p.jobStart[n]:p.jobStart[n+1]] {
				w[n] = max(w[n], weight(j))
			}
		}
	}
	// In order, a node's distance is final when it comes, and best[u] is
	// the heaviest dependency of u so far.
	dist := make([]int64, nodes)
	best := make([]int32, nodes)
	for n := range best {
		best[n] = -1
	}
	end := int32(-1)
	for _, n := range p.topo() {
		if best[n] >= 0 {
			dist[n] = dist[best[n]]
		}
		dist[n] += w[n]
		if end < 0 || dist[n] > dist[end] {
			end = n
		}
		for _, u := range p.users[p.userStart[n]:p.userStart[n+1]] {
			if best[u] < 0 || dist[n] > dist[best[u]] {
				best[u] = n
			}
		}
	}
	if end < 0 || dist[end] == 0 {
		return nil, 0
	}
	for n := end; n >= 0; n = best[n] {
		if w[n] > 0 {
			jobs = append(jobs, p.nodeJobs[p.jobStart[n]])
		}
	}
	slices.Reverse(jobs)
	return jobs, dist[end]
}

// Blockers lists, per job (indexes into the jobs given to New), up to
// limit jobs it waits for that are not done (done(job) false): those it
// depends on directly or through derivations between jobs; a job that is
// not done hides what it waits for itself. more[i] says job i waits for
// others besides. One derivation's jobs are named by the first. Time is
// linear in derivations plus edges, times limit.
func (p *Plan) Blockers(done func(job int32) bool, limit int) (blockers [][]int32, more []bool) {
	nodes := int32(len(p.status))
	by := make([][]int32, nodes) // blocking job nodes, per node
	over := make([]bool, nodes)
	for _, n := range p.topo() {
		// What n passes on to its users: itself when it is a job not
		// done, nothing when done, else what it waits for.
		pass, passOver := by[n], over[n]
		if p.jobStart[n] < p.jobStart[n+1] {
			pass, passOver = nil, false
			if p.isJob(n) && !done(p.nodeJobs[p.jobStart[n]]) {
				pass = []int32{n}
			}
		}
		for _, u := range p.users[p.userStart[n]:p.userStart[n+1]] {
			over[u] = over[u] || passOver
			for _, b := range pass {
				switch {
				case slices.Contains(by[u], b):
				case len(by[u]) < limit:
					by[u] = append(by[u], b)
				default:
					over[u] = true
				}
			}
		}
	}
	blockers, more = make([][]int32, len(p.jobs)), make([]bool, len(p.jobs))
	for i, n := range p.jobNode {
		for _, b := range by[n] {
			blockers[i] = append(blockers[i], p.nodeJobs[p.jobStart[b]])
		}
		more[i] = over[n]
	}
	return blockers, more
}
