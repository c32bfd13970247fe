package dag

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLongest(t *testing.T) {
	drv := func(a string) string { return "/nix/store/" + a + ".drv" }
	jobs := []Job{
		{Attr: "a", Drv: drv("a")}, {Attr: "b", Drv: drv("b")}, {Attr: "c", Drv: drv("c")},
		{Attr: "e", Drv: drv("e")}, {Attr: "f", Drv: drv("f")},
		{Attr: "alias-of-e", Drv: drv("e")},
		{Attr: "d1", Drv: drv("d1")}, {Attr: "d2", Drv: drv("d2"), DependsOn: []string{drv("d1")}},
		{Attr: "broken", EvalError: "does not evaluate"},
		{Attr: "loop1", Drv: drv("loop1")}, {Attr: "loop2", Drv: drv("loop2")},
	}
	g := Graph{Drvs: []string{drv("a"), drv("b"), drv("c"), drv("e"), drv("f"), drv("helper"), drv("d2"), drv("loop1"), drv("loop2")}}
	for _, e := range [][2]int32{{1, 0}, {2, 1}, {3, 5}, {5, 0}, {4, 3}, {4, 6}, {7, 8}, {8, 7}} {
		g.Edges = append(g.Edges, e[0], e[1])
	}
	ms := map[string]int64{"a": 1000, "b": 3000, "c": 500, "e": 4000, "alias-of-e": 5000, "f": 100, "d1": 2000, "d2": 2500,
		"broken": 99999, "loop1": 99999, "loop2": 99999}
	for _, tc := range []struct {
		name   string
		weight func(j int32) int64
		want   []string
		total  int64
	}{
		// a helper e f: an alias weighs the most of its derivation's jobs.
		{"durations", func(j int32) int64 { return ms[jobs[j].Attr] }, []string{"a", "e", "f"}, 6100},
		{"counts", func(int32) int64 { return 1 }, []string{"a", "b", "c"}, 3},
		{"only d", func(j int32) int64 { return map[string]int64{"d1": 1, "d2": 1}[jobs[j].Attr] }, []string{"d1", "d2"}, 2},
		{"nothing weighs", func(int32) int64 { return 0 }, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New(append([]Job(nil), jobs...), g)
			path, total := p.Longest(tc.weight)
			var attrs []string
			for _, j := range path {
				attrs = append(attrs, jobs[j].Attr)
			}
			require.Equal(t, tc.want, attrs)
			require.Equal(t, tc.total, total)
		})
	}
}

// A chain of 10,000 jobs, each reaching the one before through a
// derivation that is not a job (which reaches the one before it too), comes
// out whole from one pass over the graph, also from a plan that has run.
func TestLongestChain(t *testing.T) {
	const n = 10000
	jobs := make([]Job, n)
	var g Graph
	for i := range n {
		jobs[i] = Job{Attr: fmt.Sprintf("j%d", i), Drv: fmt.Sprintf("/nix/store/j%d.drv", i)}
		g.Drvs = append(g.Drvs, jobs[i].Drv, fmt.Sprintf("/nix/store/via%d.drv", i))
		if i > 0 {
			g.Edges = append(g.Edges, int32(2*i), int32(2*i+1), int32(2*i+1), int32(2*i-2), int32(2*i+1), int32(2*i-1))
		}
	}
	p := New(jobs, g)
	var ev Events
	p.Start(&ev)
	require.True(t, p.Succeed(jobs[0].Drv, &ev))
	path, total := p.Longest(func(int32) int64 { return 2 })
	require.Len(t, path, n)
	require.EqualValues(t, 2*n, total)
	require.EqualValues(t, 0, path[0])
	require.EqualValues(t, n-1, path[n-1])
}

// A job waits for the jobs not done that it reaches directly or through
// derivations between jobs, not for what a job not done waits for itself.
func TestBlockers(t *testing.T) {
	drv := func(a string) string { return "/nix/store/" + a + ".drv" }
	jobs := []Job{
		{Attr: "base", Drv: drv("base")}, {Attr: "lib", Drv: drv("lib")}, {Attr: "app", Drv: drv("app")},
		{Attr: "tool", Drv: drv("tool")}, {Attr: "wide", Drv: drv("wide")}, {Attr: "old", Drv: drv("old"), DependsOn: []string{drv("lib")}},
		{Attr: "x1", Drv: drv("x1")}, {Attr: "x2", Drv: drv("x2")}, {Attr: "x3", Drv: drv("x3")}, {Attr: "x4", Drv: drv("x4")},
	}
	g := Graph{Drvs: []string{drv("base"), drv("lib"), drv("app"), drv("tool"), drv("helper"), drv("wide"), drv("x1"), drv("x2"), drv("x3"), drv("x4")}}
	for _, e := range [][2]int32{
		{1, 0},         // lib -> base
		{2, 4}, {4, 1}, // app -> helper -> lib
		{4, 3},                                 // helper -> tool
		{5, 6}, {5, 7}, {5, 8}, {5, 9}, {5, 4}, // wide -> x1..x4, helper
	} {
		g.Edges = append(g.Edges, e[0], e[1])
	}
	done := map[string]bool{"base": true, "tool": true, "x1": true}
	p := New(jobs, g)
	blockers, more := p.Blockers(func(j int32) bool { return done[jobs[j].Attr] }, 3)
	got := map[string][]string{}
	over := map[string]bool{}
	for i, bs := range blockers {
		for _, b := range bs {
			got[jobs[i].Attr] = append(got[jobs[i].Attr], jobs[b].Attr)
		}
		over[jobs[i].Attr] = more[i]
	}
	require.Equal(t, map[string][]string{
		"app":  {"lib"},            // through helper; tool is done; base is lib's to wait for
		"old":  {"lib"},            // an older run's DependsOn
		"wide": {"x2", "x3", "x4"}, // and lib through helper: more
	}, got)
	require.True(t, over["wide"])
	require.False(t, over["app"])
}
