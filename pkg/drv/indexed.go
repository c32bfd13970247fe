package drv

import (
	"context"
	"fmt"
)

// IndexedGraph is a derivation graph with its derivations numbered in the
// order they were first mentioned and their inputs held as numbers, so
// that walking it costs no string hashing. Paths are numbered by a
// pathTable.
type IndexedGraph struct {
	paths []string
	tab   pathTable
	// Inputs of n: inputs[first[n] : first[n]+count[n]]; count -1 for a
	// derivation only mentioned as an input (a leaf).
	first, count []int32
	inputs       []int32
	defined      int
	// Reused by idBatch.
	keys  []pathKey
	touch uint64
}

func newIndexedGraph(hint int) *IndexedGraph {
	return &IndexedGraph{
		tab:   newPathTable(hint),
		paths: make([]string, 0, hint), first: make([]int32, 0, hint), count: make([]int32, 0, hint),
	}
}

// id numbers the derivation at full path p, adding it if new.
func (g *IndexedGraph) id(p string) int32 {
	k := g.tab.keyString(p)
	if n, ok := g.tab.find(k); ok {
		return n
	}
	return g.add(k, p)
}

// idBatch numbers the derivations at the full paths held in buf, the i-th
// ending at ends[i], adding those that are new, and appends their numbers
// to out. Looking many up at once lets their cache misses overlap.
func (g *IndexedGraph) idBatch(buf []byte, ends []int, out []int32) []int32 {
	g.keys = g.keys[:0]
	start := 0
	for _, e := range ends {
		g.keys = append(g.keys, g.tab.keyBytes(buf[start:e]))
		start = e
	}
	g.touch += g.tab.touch(g.keys)
	start = 0
	for i, k := range g.keys {
		n, ok := g.tab.find(k)
		if !ok {
			n = g.add(k, string(buf[start:ends[i]]))
		}
		out = append(out, n)
		start = ends[i]
	}
	return out
}

func (g *IndexedGraph) add(k pathKey, p string) int32 {
	n := int32(len(g.paths))
	g.tab.insert(k, n)
	g.paths = append(g.paths, p)
	g.first = append(g.first, 0)
	g.count = append(g.count, -1)
	return n
}

// lookup returns p's number, if the graph mentions p.
func (g *IndexedGraph) lookup(p string) (int32, bool) {
	return g.tab.find(g.tab.keyString(p))
}

// setInputs records ins as n's inputs, replacing any earlier ones.
func (g *IndexedGraph) setInputs(n int32, ins []int32) {
	if g.count[n] < 0 {
		g.defined++
	}
	g.first[n] = int32(len(g.inputs))
	g.count[n] = int32(len(ins))
	g.inputs = append(g.inputs, ins...)
}

func (g *IndexedGraph) inputsOf(n int32) []int32 {
	if int(n) >= len(g.first) || g.count[n] <= 0 {
		return nil
	}
	return g.inputs[g.first[n] : g.first[n]+g.count[n]]
}

// Derivations is the number of derivations whose inputs the graph holds
// (the others are only mentioned as inputs).
func (g *IndexedGraph) Derivations() int { return g.defined }

// Inputs returns p's input derivations; a derivation the graph does not
// know is a leaf (nil, nil).
func (g *IndexedGraph) Inputs(p string) ([]string, error) {
	n, ok := g.lookup(p)
	if !ok {
		return nil, nil
	}
	ins := g.inputsOf(n)
	if len(ins) == 0 {
		return nil, nil
	}
	out := make([]string, len(ins))
	for k, c := range ins {
		out[k] = g.paths[c]
	}
	return out, nil
}

// load numbers everything reachable from jobs in g, reading each
// derivation's inputs once.
func load(ctx context.Context, g Graph, jobs []string) (*IndexedGraph, error) {
	ig := newIndexedGraph(2 * len(jobs))
	var queue []int32
	for _, j := range jobs {
		if j == "" {
			continue
		}
		if _, ok := ig.lookup(j); !ok {
			queue = append(queue, ig.id(j))
		}
	}
	var ids []int32
	for k := 0; k < len(queue); k++ {
		if k%4096 == 4095 && ctx.Err() != nil {
			return nil, fmt.Errorf("derivation graph: %w", ctx.Err())
		}
		n := queue[k]
		ins, err := g.Inputs(ig.paths[n])
		if err != nil {
			return nil, fmt.Errorf("inputs of %s: %w", ig.paths[n], err)
		}
		ids = ids[:0]
		for _, in := range ins {
			before := len(ig.paths)
			c := ig.id(in)
			if len(ig.paths) > before {
				queue = append(queue, c)
			}
			ids = append(ids, c)
		}
		ig.setInputs(n, ids)
	}
	return ig, nil
}
