package drv

import (
	"context"
	"fmt"
	"strings"
)

// IndexedGraph is a derivation graph with its derivations numbered in the
// order they were first mentioned and their inputs held as numbers, so
// that walking it costs no string hashing. Paths are numbered by a
// pathTable.
type IndexedGraph struct {
	paths []string
	// arena holds the paths' bytes: a few large strings rather than one
	// per path for the collector to track.
	arena strings.Builder
	tab   pathTable
	// Inputs of n: count[n] numbers from inputs[first[n]>>chunkShift] at
	// first[n]&chunkMask; count -1 for a derivation only mentioned as an
	// input (a leaf). Chunks are filled in turn, each input list within
	// one, so that they never move (up to 2³² input edges).
	first   []uint32
	count   []int32
	inputs  [][]int32
	defined int
	// Reused by idBatch.
	keys  []pathKey
	touch uint64
}

const (
	chunkShift = 16
	chunkMask  = 1<<chunkShift - 1
	arenaSize  = 256 << 10
)

func newIndexedGraph(hint int) *IndexedGraph {
	return &IndexedGraph{
		tab:   newPathTable(hint),
		paths: make([]string, 0, hint), first: make([]uint32, 0, hint), count: make([]int32, 0, hint),
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
			n = g.add(k, g.intern(buf[start:ends[i]]))
		}
		out = append(out, n)
		start = ends[i]
	}
	return out
}

// intern returns p as a string cut from the arena.
func (g *IndexedGraph) intern(p []byte) string {
	if len(p) > arenaSize/16 {
		return string(p)
	}
	if g.arena.Cap()-g.arena.Len() < len(p) {
		// The strings already cut keep the old buffer.
		g.arena = strings.Builder{}
		g.arena.Grow(arenaSize)
	}
	start := g.arena.Len()
	g.arena.Write(p)
	return g.arena.String()[start:]
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
	g.count[n] = int32(len(ins))
	g.first[n] = 0
	if len(ins) == 0 {
		return
	}
	last := len(g.inputs) - 1
	if last < 0 || cap(g.inputs[last])-len(g.inputs[last]) < len(ins) {
		// A list longer than a chunk gets one of its own.
		g.inputs = append(g.inputs, make([]int32, 0, max(1<<chunkShift, len(ins))))
		last++
	}
	g.first[n] = uint32(last)<<chunkShift | uint32(len(g.inputs[last]))
	g.inputs[last] = append(g.inputs[last], ins...)
}

func (g *IndexedGraph) inputsOf(n int32) []int32 {
	if int(n) >= len(g.first) || g.count[n] <= 0 {
		return nil
	}
	f := g.first[n]
	return g.inputs[f>>chunkShift][f&chunkMask:][:g.count[n]]
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
