package drv

import (
	"context"
	"fmt"
	"slices"
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
	w := &reducer{g: g, index: make(map[string]int32, 2*len(jobs))}
	if mg, ok := g.(MapGraph); ok {
		w.index = make(map[string]int32, len(mg)+len(jobs))
	}
	for _, j := range jobs {
		if _, dup := w.index[j]; j == "" || dup {
			continue
		}
		w.index[j] = int32(len(w.nodes))
		w.nodes = append(w.nodes, rnode{path: j, keep: true})
	}
	nj := int32(len(w.nodes))
	for r := range nj {
		if w.nodes[r].state == white {
			if err := w.walk(ctx, r); err != nil {
				return Reduced{}, err
			}
		}
	}
	// Number what is kept: jobs, then non-jobs in the walk's post-order
	// (inputs before their users).
	num := make([]int32, len(w.nodes))
	out := Reduced{Drvs: make([]string, 0, int(nj)+len(w.order)), Jobs: int(nj)}
	for i := range nj {
		num[i] = i
		out.Drvs = append(out.Drvs, w.nodes[i].path)
	}
	for _, n := range w.order {
		if n >= nj && w.nodes[n].keep {
			num[n] = int32(len(out.Drvs))
			out.Drvs = append(out.Drvs, w.nodes[n].path)
		}
	}
	edges := 0
	for n := range w.nodes {
		if w.nodes[n].keep {
			for _, c := range w.nodes[n].inputs {
				if w.nodes[c].keep {
					edges++
				}
			}
		}
	}
	out.Edges = make([]int32, 0, 2*edges)
	for n := range w.nodes {
		if !w.nodes[n].keep {
			continue
		}
		for _, c := range w.nodes[n].inputs {
			if w.nodes[c].keep {
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

type rnode struct {
	path   string
	inputs []int32
	state  uint8
	// keep: a job, or a job is reachable from it.
	keep bool
}

type reducer struct {
	g     Graph
	index map[string]int32
	nodes []rnode
	order []int32 // post-order of the walk
	stack []frame
	seen  int
}

type frame struct{ n, next int32 }

// expand loads n's inputs (each once) and puts n on the stack.
func (w *reducer) expand(ctx context.Context, n int32) error {
	if w.seen++; w.seen%4096 == 0 && ctx.Err() != nil {
		return fmt.Errorf("derivation graph: %w", ctx.Err())
	}
	ins, err := w.g.Inputs(w.nodes[n].path)
	if err != nil {
		return fmt.Errorf("inputs of %s: %w", w.nodes[n].path, err)
	}
	ids := make([]int32, 0, len(ins))
	for _, in := range ins {
		id, ok := w.index[in]
		if !ok {
			id = int32(len(w.nodes))
			w.index[in] = id
			w.nodes = append(w.nodes, rnode{path: in})
		}
		ids = append(ids, id)
	}
	if len(ids) > 1 {
		// A hand-made graph may repeat an input; inputDrvs cannot.
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	w.nodes[n].inputs = ids
	w.nodes[n].state = gray
	w.stack = append(w.stack, frame{n: n})
	return nil
}

// walk visits everything below root depth first, without recursion
// (derivation chains can be very deep).
func (w *reducer) walk(ctx context.Context, root int32) error {
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
		nd := &w.nodes[n]
		nd.state = black
		for _, c := range nd.inputs {
			if w.nodes[c].keep {
				nd.keep = true
				break
			}
		}
		w.order = append(w.order, n)
		w.stack = w.stack[:len(w.stack)-1]
	}
	return nil
}
