package bus

import (
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// MaxGraphChunkBytes bounds the derivation paths and edges one GraphChunk
// carries, far below the bus's message limit whatever the graph's size or
// density.
const MaxGraphChunkBytes = 192 << 10

// GraphChunks cuts a run's derivation graph (paths numbered by position,
// edges as flattened pairs of those numbers) into GraphChunks of at most
// maxBytes of paths and edges each (MaxGraphChunkBytes when maxBytes <= 0;
// a single path longer than that gets a chunk of its own). Cutting the same
// graph always gives the same chunks, so a retried evaluation publishes the
// same messages.
func GraphChunks(runID string, drvs []string, edges []int32, maxBytes int) []*nixbuspb.GraphChunk {
	if len(drvs) == 0 && len(edges) < 2 {
		return nil
	}
	if maxBytes <= 0 {
		maxBytes = MaxGraphChunkBytes
	}
	var out []*nixbuspb.GraphChunk
	cur := &nixbuspb.GraphChunk{RunId: runID}
	size := 0
	next := func() {
		out = append(out, cur)
		cur = &nixbuspb.GraphChunk{RunId: runID, Index: int32(len(out))}
		size = 0
	}
	for k, d := range drvs {
		n := len(d) + 3 // tag and length
		if size > 0 && size+n > maxBytes {
			next()
		}
		if len(cur.DrvPaths) == 0 {
			cur.FirstDrv = int32(k)
		}
		cur.DrvPaths = append(cur.DrvPaths, d)
		size += n
	}
	const perEdge = 10 // two varints of up to 5 bytes
	for k := 0; k+1 < len(edges); k += 2 {
		if size > 0 && size+perEdge > maxBytes {
			next()
		}
		cur.Edges = append(cur.Edges, edges[k], edges[k+1])
		size += perEdge
	}
	if size > 0 {
		out = append(out, cur)
	}
	return out
}

// AssembleGraph puts a run's GraphChunks back together, in any order and
// with repeats (the first of each index counts). Chunks that do not fit
// the numbering (a range overlapping another or beyond the paths the
// chunks carry) lose their paths; edges are passed on as they are, for the
// reader to range-check. Memory is bounded by what the chunks carry.
func AssembleGraph(chunks []*nixbuspb.GraphChunk) (drvs []string, edges []int32) {
	seen := make(map[int32]bool, len(chunks))
	total, nedges := 0, 0
	use := chunks[:0:0]
	for _, c := range chunks {
		if seen[c.GetIndex()] {
			continue
		}
		seen[c.GetIndex()] = true
		use = append(use, c)
		total += len(c.GetDrvPaths())
		nedges += len(c.GetEdges())
	}
	drvs = make([]string, total)
	filled := make([]bool, total)
	for _, c := range use {
		first, ps := int(c.GetFirstDrv()), c.GetDrvPaths()
		if first < 0 || first+len(ps) > total {
			continue
		}
		clash := false
		for k := range ps {
			clash = clash || filled[first+k]
		}
		if clash {
			continue
		}
		for k, p := range ps {
			drvs[first+k], filled[first+k] = p, true
		}
	}
	edges = make([]int32, 0, nedges)
	for _, c := range use {
		e := c.GetEdges()
		edges = append(edges, e[:len(e)&^1]...)
	}
	return drvs, edges
}
