package drv

import (
	"context"
	"fmt"
	"hash/maphash"
)

// IndexedGraph is a derivation graph with its derivations numbered in the
// order they were first mentioned and their inputs held as numbers, so
// that walking it costs no string hashing. Derivations are looked up by a
// 128-bit hash of their path under random seeds, kept inline in the map:
// one memory access per lookup instead of two, and two paths that collide
// (a chance of about n²/2¹²⁸) cannot be chosen by whoever wrote the graph.
type IndexedGraph struct {
	paths []string
	ids   map[[2]uint64]int32
	seeds [2]maphash.Seed
	// Inputs of n: inputs[first[n] : first[n]+count[n]]; count -1 for a
	// derivation only mentioned as an input (a leaf).
	first, count []int32
	inputs       []int32
	defined      int
}

func newIndexedGraph(hint int) *IndexedGraph {
	return &IndexedGraph{
		ids:   make(map[[2]uint64]int32, hint),
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		paths: make([]string, 0, hint), first: make([]int32, 0, hint), count: make([]int32, 0, hint),
	}
}

// idBytes numbers the derivation at full path p, adding it if new.
func (g *IndexedGraph) idBytes(p []byte) int32 {
	k := [2]uint64{maphash.Bytes(g.seeds[0], p), maphash.Bytes(g.seeds[1], p)}
	if n, ok := g.ids[k]; ok {
		return n
	}
	return g.add(k, string(p))
}

// id numbers the derivation at full path p, adding it if new.
func (g *IndexedGraph) id(p string) int32 {
	k := [2]uint64{maphash.String(g.seeds[0], p), maphash.String(g.seeds[1], p)}
	if n, ok := g.ids[k]; ok {
		return n
	}
	return g.add(k, p)
}

func (g *IndexedGraph) add(k [2]uint64, p string) int32 {
	n := int32(len(g.paths))
	g.ids[k] = n
	g.paths = append(g.paths, p)
	g.first = append(g.first, 0)
	g.count = append(g.count, -1)
	return n
}

// lookup returns p's number, if the graph mentions p.
func (g *IndexedGraph) lookup(p string) (int32, bool) {
	n, ok := g.ids[[2]uint64{maphash.String(g.seeds[0], p), maphash.String(g.seeds[1], p)}]
	return n, ok
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
