package drv

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestJobDeps(t *testing.T) {
	tests := []struct {
		name  string
		graph MapGraph
		jobs  []string
		want  map[string][]string
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
			name:  "a job reaching itself through a helper does not wait for itself",
			graph: MapGraph{"a": {"h"}, "h": {"a"}},
			jobs:  []string{"a"},
			want:  map[string][]string{"a": nil},
		},
		{
			name:  "no jobs",
			graph: MapGraph{"b": {"a"}},
			want:  map[string][]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := JobDeps(t.Context(), tt.graph, tt.jobs)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestJobDepsRefusesCycles(t *testing.T) {
	tests := []struct {
		name  string
		graph MapGraph
		jobs  []string
	}{
		{"helpers in a cycle", MapGraph{"a": {"h1"}, "h1": {"h2"}, "h2": {"h1"}}, []string{"a"}},
		{"jobs waiting for each other", MapGraph{"a": {"b"}, "b": {"h"}, "h": {"a"}}, []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := JobDeps(t.Context(), tt.graph, tt.jobs)
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

func TestJobDepsGraphError(t *testing.T) {
	_, err := JobDeps(t.Context(), errGraph{MapGraph{"a": {"bad"}}}, []string{"a"})
	require.ErrorContains(t, err, "boom")
}

func TestJobDepsDeepChain(t *testing.T) {
	// A very deep chain of helpers must not exhaust the stack.
	const n = 200_000
	g := MapGraph{"top": {"h0"}}
	for i := range n - 1 {
		g[fmt.Sprintf("h%d", i)] = []string{fmt.Sprintf("h%d", i+1)}
	}
	g[fmt.Sprintf("h%d", n-1)] = []string{"bottom"}
	got, err := JobDeps(t.Context(), g, []string{"top", "bottom"})
	require.NoError(t, err)
	require.Equal(t, []string{"bottom"}, got["top"])
}

func TestJobDepsCancelled(t *testing.T) {
	g := MapGraph{}
	var jobs []string
	for i := range 10_000 {
		jobs = append(jobs, fmt.Sprintf("j%d", i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := JobDeps(ctx, g, jobs)
	require.Error(t, err)
}
