package dag

// Longest is the heaviest path through the plan's DAG, a derivation
// weighing the most of its jobs' weights (weight(i) for job i, an index
// into the jobs given to New); a derivation between jobs and a job that
// did not evaluate weigh nothing. It
// returns the jobs on the path that weigh anything, one per derivation
// (its first), in the order they build (each waits for the one before),
// and the path's total weight. With durations as weights it is the run's
// critical path. Time is linear in derivations plus edges, whatever the
// plan's state; jobs caught in a dependency cycle are on no path.
func (p *Plan) Longest(weight func(job int32) int64) (jobs []int32, total int64) {
	nodes := int32(len(p.status))
	w := make([]int64, nodes)
	left := make([]int32, nodes) // dependencies not yet in order
	for n := range nodes {
		for _, j := range p.nodeJobs[p.jobStart[n]:p.jobStart[n+1]] {
			if !p.evalNode[n] {
				w[n] = max(w[n], weight(j))
			}
		}
		for _, u := range p.users[p.userStart[n]:p.userStart[n+1]] {
			left[u]++
		}
	}
	// Kahn's order: a node comes once all it waits for came; its distance
	// is then final, and best[u] the heaviest dependency of u so far.
	order := make([]int32, 0, nodes)
	for n := range nodes {
		if left[n] == 0 {
			order = append(order, n)
		}
	}
	dist := make([]int64, nodes)
	best := make([]int32, nodes)
	for n := range best {
		best[n] = -1
	}
	end := int32(-1)
	for k := 0; k < len(order); k++ {
		n := order[k]
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
			if left[u]--; left[u] == 0 {
				order = append(order, u)
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
	for i, j := 0, len(jobs)-1; i < j; i, j = i+1, j-1 {
		jobs[i], jobs[j] = jobs[j], jobs[i]
	}
	return jobs, dist[end]
}
