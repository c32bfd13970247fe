package drv

import (
	"context"
	"fmt"
)

// Reduced is the part of a derivation graph that orders a run's jobs: the
// job derivations and the non-job derivations through which a job reaches
// another, numbered, with their input edges among themselves. A job waits
// for the jobs reachable from it through non-job derivations (a path stops
// at the first job it meets); a scheduler gets that order by treating the
// non-job derivations as nodes that are done when all their inputs are,
// in time linear in Drvs plus Edges instead of in job-to-job pairs.
type Reduced struct {
	// Drvs are the derivation paths, jobs first (in the order given, without
	// duplicates), then non-job derivations, each after its inputs.
	Drvs []string
	// Jobs is how many of Drvs are jobs: Drvs[:Jobs].
	Jobs int
	// Edges are pairs of indexes into Drvs, flattened: Edges[2k] has
	// Edges[2k+1] among its input derivations.
	Edges []int32
}

// Reduce walks g from the job derivations and keeps the derivations that
// lie on a path from one job to another: every job, and each non-job
// derivation from which a job is reachable. Derivations from which no job
// is reachable (sources, the compiler's own inputs, ...) are dropped with
// their edges. Each derivation is visited once and each edge followed once.
// Empty and duplicate job paths are ignored; unknown derivations are leaves.
// A cycle of derivations is refused with an error.
func Reduce(ctx context.Context, g Graph, jobs []string) (Reduced, error) {
	ig, ok := g.(*IndexedGraph)
	if !ok {
		var err error
		if ig, err = load(ctx, g, jobs); err != nil {
			return Reduced{}, err
		}
	}
	// Nodes are ig's numbers, then jobs ig does not mention (leaves).
	base := int32(len(ig.paths))
	w := &reducer{g: ig, nodes: base}
	var extra []string
	isJob := make([]bool, base)
	var jobIDs []int32
	var extraSeen map[string]bool
	for _, j := range jobs {
		if j == "" {
			continue
		}
		n, ok := ig.lookup(j)
		if !ok {
			if extraSeen[j] {
				continue
			}
			if extraSeen == nil {
				extraSeen = map[string]bool{}
			}
			extraSeen[j] = true
			jobIDs = append(jobIDs, base+int32(len(extra)))
			extra = append(extra, j)
			continue
		}
		if isJob[n] {
			continue
		}
		isJob[n] = true
		jobIDs = append(jobIDs, n)
	}
	w.nodes += int32(len(extra))
	w.order = make([]int32, 0, w.nodes)
	w.state = make([]uint8, w.nodes)
	w.keep = make([]bool, w.nodes)
	for _, n := range jobIDs {
		w.keep[n] = true
	}
	for _, r := range jobIDs {
		if w.state[r] == white {
			if err := w.walk(ctx, r); err != nil {
				return Reduced{}, err
			}
		}
	}
	path := func(n int32) string {
		if n < base {
			return ig.paths[n]
		}
		return extra[n-base]
	}
	// Number what is kept: jobs, then non-jobs in the walk's post-order
	// (inputs before their users).
	num := make([]int32, w.nodes)
	kept, edges := len(jobIDs), 0
	for _, n := range w.order {
		if w.keep[n] {
			if n >= base || !isJob[n] {
				kept++
			}
			for _, c := range ig.inputsOf(n) {
				if w.keep[c] {
					edges++
				}
			}
		}
	}
	out := Reduced{Drvs: make([]string, 0, kept), Jobs: len(jobIDs)}
	for k, n := range jobIDs {
		num[n] = int32(k)
		out.Drvs = append(out.Drvs, path(n))
	}
	for _, n := range w.order {
		if w.keep[n] && (n >= base || !isJob[n]) {
			num[n] = int32(len(out.Drvs))
			out.Drvs = append(out.Drvs, path(n))
		}
	}
	out.Edges = make([]int32, 0, 2*edges)
	for _, n := range w.order {
		if !w.keep[n] {
			continue
		}
		for _, c := range ig.inputsOf(n) {
			if w.keep[c] {
				out.Edges = append(out.Edges, num[n], num[c])
			}
		}
	}
	return out, nil
}

const (
	white uint8 = iota // not seen
	gray               // on the walk's stack
	black              // done: keep is final
)

type reducer struct {
	g     *IndexedGraph
	nodes int32
	state []uint8
	// keep: a job, or a job is reachable from it.
	keep  []bool
	order []int32 // post-order of the walk
	stack []frame
	seen  int
}

type frame struct{ n, next int32 }

// walk visits everything below root depth first, without recursion
// (derivation chains can be very deep).
func (w *reducer) walk(ctx context.Context, root int32) error {
	w.state[root] = gray
	w.stack = append(w.stack[:0], frame{n: root})
	for len(w.stack) > 0 {
		f := &w.stack[len(w.stack)-1]
		n := f.n
		ins := w.g.inputsOf(n)
		descended := false
		for int(f.next) < len(ins) {
			c := ins[f.next]
			f.next++
			switch w.state[c] {
			case gray:
				return fmt.Errorf("derivation cycle through %s", w.g.paths[c])
			case white:
				if w.seen++; w.seen%4096 == 0 && ctx.Err() != nil {
					return fmt.Errorf("derivation graph: %w", ctx.Err())
				}
				w.state[c] = gray
				w.stack = append(w.stack, frame{n: c})
				descended = true
			}
			if descended {
				break
			}
		}
		if descended {
			continue
		}
		w.state[n] = black
		if !w.keep[n] {
			for _, c := range ins {
				if w.keep[c] {
					w.keep[n] = true
					break
				}
			}
		}
		w.order = append(w.order, n)
		w.stack = w.stack[:len(w.stack)-1]
	}
	return nil
}
