package drv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReduce(t *testing.T) {
	tests := []struct {
		name  string
		graph MapGraph
		jobs  []string
		want  map[string][]string
		drvs  int // how many derivations are kept, when it matters
	}{
		{
			name:  "diamond",
			graph: MapGraph{"d": {"b", "c"}, "b": {"a"}, "c": {"a"}},
			jobs:  []string{"a", "b", "c", "d"},
			want:  map[string][]string{"a": nil, "b": {"a"}, "c": {"a"}, "d": {"b", "c"}},
		},
		{
			name:  "chain through a non-job helper",
			graph: MapGraph{"c": {"h"}, "h": {"h2"}, "h2": {"a"}},
			jobs:  []string{"a", "c"},
			want:  map[string][]string{"a": nil, "c": {"a"}},
		},
		{
			name:  "path stops at the first job",
			graph: MapGraph{"c": {"b"}, "b": {"a"}},
			jobs:  []string{"a", "b", "c"},
			want:  map[string][]string{"a": nil, "b": {"a"}, "c": {"b"}},
		},
		{
			name:  "job reachable via two paths is listed once",
			graph: MapGraph{"top": {"h1", "h2", "a"}, "h1": {"a"}, "h2": {"h3"}, "h3": {"a"}},
			jobs:  []string{"a", "top"},
			want:  map[string][]string{"a": nil, "top": {"a"}},
		},
		{
			name:  "reached both directly and past a job",
			graph: MapGraph{"c": {"b", "h"}, "b": {"a"}, "h": {"a"}},
			jobs:  []string{"c", "b", "a"},
			want:  map[string][]string{"a": nil, "b": {"a"}, "c": {"a", "b"}},
		},
		{
			name:  "shared helper memoised for many jobs",
			graph: MapGraph{"x": {"h"}, "y": {"h"}, "z": {"h", "w"}, "h": {"g"}, "g": {"a", "b"}, "w": {"b"}},
			jobs:  []string{"a", "b", "x", "y", "z"},
			want:  map[string][]string{"a": nil, "b": nil, "x": {"a", "b"}, "y": {"a", "b"}, "z": {"a", "b"}},
		},
		{
			name:  "duplicates and empty paths are ignored",
			graph: MapGraph{"b": {"a"}},
			jobs:  []string{"b", "a", "b", ""},
			want:  map[string][]string{"a": nil, "b": {"a"}},
		},
		{
			name:  "unknown derivations are leaves",
			graph: MapGraph{"b": {"nowhere", "a"}},
			jobs:  []string{"a", "b"},
			want:  map[string][]string{"a": nil, "b": {"a"}},
		},
		{
			name:  "helpers that reach no job are dropped",
			graph: MapGraph{"b": {"src", "h"}, "src": {"fetcher"}, "h": {"a", "patch"}},
			jobs:  []string{"a", "b"},
			want:  map[string][]string{"a": nil, "b": {"a"}},
			drvs:  3,
		},
		{
			name:  "no jobs",
			graph: MapGraph{"b": {"a"}},
			want:  map[string][]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Reduce(t.Context(), tt.graph, tt.jobs)
			require.NoError(t, err)
			require.Equal(t, tt.want, jobDeps(r))
			// The same from the graph as parsed JSON.
			var abs []string
			for _, j := range tt.jobs {
				if j != "" {
					j = "/" + j
				}
				abs = append(abs, j)
			}
			ir, err := Reduce(t.Context(), indexed(t, tt.graph), abs)
			require.NoError(t, err)
			got := map[string][]string{}
			for j, deps := range jobDeps(ir) {
				for k := range deps {
					deps[k] = deps[k][1:]
				}
				got[j[1:]] = deps
			}
			require.Equal(t, tt.want, got)
			require.Len(t, ir.Drvs, len(r.Drvs))
			if tt.drvs > 0 {
				require.Len(t, r.Drvs, tt.drvs)
			}
		})
	}
}

func TestReduceRefusesCycles(t *testing.T) {
	tests := []struct {
		name  string
		graph MapGraph
		jobs  []string
	}{
		{"helpers in a cycle", MapGraph{"a": {"h1"}, "h1": {"h2"}, "h2": {"h1"}}, []string{"a"}},
		{"jobs waiting for each other", MapGraph{"a": {"b"}, "b": {"h"}, "h": {"a"}}, []string{"a", "b"}},
		{"a job reaching itself through a helper", MapGraph{"a": {"h"}, "h": {"a"}}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Reduce(t.Context(), tt.graph, tt.jobs)
			require.ErrorContains(t, err, "cycle")
		})
	}
}

type errGraph struct{ MapGraph }

func (g errGraph) Inputs(p string) ([]string, error) {
	if p == "bad" {
		return nil, errors.New("boom")
	}
	return g.MapGraph.Inputs(p)
}

func TestReduceGraphError(t *testing.T) {
	_, err := Reduce(t.Context(), errGraph{MapGraph{"a": {"bad"}}}, []string{"a"})
	require.ErrorContains(t, err, "boom")
}

func TestReduceDeepChain(t *testing.T) {
	// A very deep chain of helpers must not exhaust the stack.
	const n = 200_000
	g := MapGraph{"top": {"h0"}}
	for i := range n - 1 {
		g[fmt.Sprintf("h%d", i)] = []string{fmt.Sprintf("h%d", i+1)}
	}
	g[fmt.Sprintf("h%d", n-1)] = []string{"bottom"}
	r, err := Reduce(t.Context(), g, []string{"top", "bottom"})
	require.NoError(t, err)
	require.Equal(t, []string{"bottom"}, jobDeps(r)["top"])
	require.Len(t, r.Drvs, n+2)
}

func TestReduceCancelled(t *testing.T) {
	g := MapGraph{}
	var jobs []string
	for i := range 10_000 {
		jobs = append(jobs, fmt.Sprintf("j%d", i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Reduce(ctx, g, jobs)
	require.Error(t, err)
}

// jobDeps reads, from a reduced graph, the jobs each job waits for: those
// reachable through non-job derivations only (the planner's rule), by a
// plain search per job.
func jobDeps(r Reduced) map[string][]string {
	inputs := make([][]int32, len(r.Drvs))
	for k := 0; k < len(r.Edges); k += 2 {
		inputs[r.Edges[k]] = append(inputs[r.Edges[k]], r.Edges[k+1])
	}
	out := map[string][]string{}
	for j := range r.Jobs {
		var deps []string
		seen := map[int32]bool{}
		stack := slices.Clone(inputs[j])
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[n] {
				continue
			}
			seen[n] = true
			if int(n) < r.Jobs {
				deps = append(deps, r.Drvs[n])
				continue
			}
			stack = append(stack, inputs[n]...)
		}
		slices.Sort(deps)
		out[r.Drvs[j]] = deps
	}
	return out
}

// indexed writes g as show-derivation JSON, each name made a path by a
// leading /, and parses it back.
func indexed(t *testing.T, g MapGraph) *IndexedGraph {
	t.Helper()
	in := map[string]map[string]map[string][]string{}
	for d, ins := range g {
		in["/"+d] = map[string]map[string][]string{"inputDrvs": {}}
		for _, i := range ins {
			in["/"+d]["inputDrvs"]["/"+i] = []string{"out"}
		}
	}
	js, err := json.Marshal(in)
	require.NoError(t, err)
	ig, err := ParseShowDerivationIndexed(bytes.NewReader(js))
	require.NoError(t, err)
	return ig
}
