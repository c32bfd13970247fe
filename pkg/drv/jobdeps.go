package drv

import (
	"context"
	"fmt"
	"slices"
)

// JobDeps returns, for each job derivation, the job derivations it must wait
// for: those reachable through its inputDrvs directly or through non-job
// derivations only (a path stops at the first job it meets). Every job is a
// key of the result; its value is sorted and nil when it waits for nothing.
// Duplicate and empty job paths are ignored.
//
// Each derivation is visited once and each edge followed once; the job sets
// of non-job derivations are memoised (shared, not copied, along chains of
// helpers), so the cost is linear in derivations plus edges in practice.
// A cycle of derivations is refused with an error.
func JobDeps(ctx context.Context, g Graph, jobs []string) (map[string][]string, error) {
	js := slices.Clone(jobs)
	slices.Sort(js)
	js = slices.Compact(js)
	if len(js) > 0 && js[0] == "" {
		js = js[1:]
	}
	hint := 2 * len(js)
	if mg, ok := g.(MapGraph); ok {
		hint = max(hint, len(mg))
	}
	w := &walker{g: g, nj: int32(len(js)), index: make(map[string]int32, hint), nodes: make([]node, len(js), hint)}
	w.mark = make([]int32, len(js))
	for i, j := range js {
		w.index[j] = int32(i)
		w.nodes[i].path = j
	}
	for r := range w.nj {
		if err := w.walk(ctx, r); err != nil {
			return nil, err
		}
	}
	out := make(map[string][]string, len(js))
	for i := range w.nj {
		var deps []string
		if r := w.nodes[i].reach; len(r) > 0 {
			deps = make([]string, len(r))
			for k, d := range r {
				deps[k] = js[d]
			}
		}
		out[js[i]] = deps
	}
	if err := checkAcyclic(w); err != nil {
		return nil, err
	}
	return out, nil
}

const (
	white uint8 = iota // not seen
	gray               // on the walk's stack
	black              // done: reach is final
)

type node struct {
	path   string
	inputs []int32
	// reach: for a non-job, the jobs reachable through non-jobs; for a job,
	// the jobs it waits for. Sorted job indices (sorted indices are sorted
	// paths, since jobs are numbered in path order).
	reach []int32
	state uint8
}

type walker struct {
	g     Graph
	nj    int32 // nodes [0, nj) are the jobs
	index map[string]int32
	nodes []node
	mark  []int32 // per job: the stamp of the last merge that took it
	stamp int32
	stack []frame
	buf   []int32
	seen  int
}

type frame struct{ n, next int32 }

// expand loads n's inputs and puts it on the stack.
func (w *walker) expand(ctx context.Context, n int32) error {
	if w.seen++; w.seen%4096 == 0 && ctx.Err() != nil {
		return fmt.Errorf("job dependencies: %w", ctx.Err())
	}
	ins, err := w.g.Inputs(w.nodes[n].path)
	if err != nil {
		return fmt.Errorf("inputs of %s: %w", w.nodes[n].path, err)
	}
	ids := make([]int32, len(ins))
	for k, in := range ins {
		id, ok := w.index[in]
		if !ok {
			id = int32(len(w.nodes))
			w.index[in] = id
			w.nodes = append(w.nodes, node{path: in})
		}
		ids[k] = id
	}
	w.nodes[n].inputs = ids
	w.nodes[n].state = gray
	w.stack = append(w.stack, frame{n: n})
	return nil
}

// walk computes reach for root and every non-job below it, depth first
// without recursion (derivation chains can be very deep).
func (w *walker) walk(ctx context.Context, root int32) error {
	if err := w.expand(ctx, root); err != nil {
		return err
	}
	for len(w.stack) > 0 {
		f := &w.stack[len(w.stack)-1]
		n := f.n
		descended := false
		for int(f.next) < len(w.nodes[n].inputs) {
			c := w.nodes[n].inputs[f.next]
			f.next++
			if c < w.nj {
				continue // a job: the path stops here
			}
			switch w.nodes[c].state {
			case gray:
				return fmt.Errorf("derivation cycle through %s", w.nodes[c].path)
			case white:
				if err := w.expand(ctx, c); err != nil {
					return err
				}
				descended = true
			}
			if descended {
				break
			}
		}
		if descended {
			continue
		}
		w.finish(n)
		w.stack = w.stack[:len(w.stack)-1]
	}
	return nil
}

// finish merges n's inputs' contributions into n's reach.
func (w *walker) finish(n int32) {
	nd := &w.nodes[n]
	nd.state = black
	var only []int32
	sources := 0
	for _, c := range nd.inputs {
		if c < w.nj {
			if c != n {
				sources += 2 // never shared
			}
			continue
		}
		if r := w.nodes[c].reach; len(r) > 0 {
			if sources == 0 {
				only = r
			}
			sources++
		}
	}
	switch {
	case sources == 0:
		return
	case sources == 1 && n >= w.nj:
		// A chain of helpers shares one set instead of copying it.
		nd.reach = only
		return
	}
	w.stamp++
	buf := w.buf[:0]
	take := func(j int32) {
		if j != n && w.mark[j] != w.stamp {
			w.mark[j] = w.stamp
			buf = append(buf, j)
		}
	}
	for _, c := range nd.inputs {
		if c < w.nj {
			take(c)
			continue
		}
		for _, j := range w.nodes[c].reach {
			take(j)
		}
	}
	slices.Sort(buf)
	if len(buf) > 0 {
		nd.reach = slices.Clone(buf)
	}
	w.buf = buf
}

// checkAcyclic refuses jobs that wait for each other in a cycle (which a
// derivation graph cannot have, but a hand-made Graph can): such jobs would
// never be released.
func checkAcyclic(w *walker) error {
	indeg := make([]int32, w.nj)
	users := make([][]int32, w.nj)
	for i := range w.nj {
		for _, d := range w.nodes[i].reach {
			indeg[i]++
			users[d] = append(users[d], i)
		}
	}
	queue := make([]int32, 0, w.nj)
	for i := range w.nj {
		if indeg[i] == 0 {
			queue = append(queue, i)
		}
	}
	for k := 0; k < len(queue); k++ {
		for _, u := range users[queue[k]] {
			if indeg[u]--; indeg[u] == 0 {
				queue = append(queue, u)
			}
		}
	}
	if len(queue) == int(w.nj) {
		return nil
	}
	for i := range w.nj {
		if indeg[i] > 0 {
			return fmt.Errorf("job dependency cycle through %s", w.nodes[i].path)
		}
	}
	return nil
}
