package dag

import (
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

type result struct {
	status  Status
	failure Failure
	reason  string
}

// simulate runs a plan to the end with builders that answer every release
// in order: drvs in fail fail, all others succeed. It returns each attr's
// outcome (asserting there is exactly one) and the drvs in release order.
func simulate(t *testing.T, jobs []Job, g Graph, fail map[string]bool) (map[string]result, []string, *Plan) {
	t.Helper()
	p := New(jobs, g)
	got := map[string]result{}
	var released []string
	var queue []Release
	var ev Events
	collect := func() {
		for _, o := range ev.Outcomes {
			attr := jobs[o.Job].Attr
			_, dup := got[attr]
			require.False(t, dup, "second outcome for %s", attr)
			if o.Status == Skipped {
				require.Equal(t, "dependency "+jobs[o.Cause].Attr+" failed", o.Reason, "a skip's cause is the job it names")
				require.Equal(t, Failed, p.Status(int(o.Cause)))
			}
			got[attr] = result{o.Status, o.Failure, o.Reason}
		}
		for _, r := range ev.Releases {
			released = append(released, r.Drv)
			queue = append(queue, Release{Drv: r.Drv, System: r.System, Jobs: append([]int32(nil), r.Jobs...)})
		}
		ev.Reset()
	}
	p.Start(&ev)
	collect()
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		if fail[r.Drv] {
			require.True(t, p.Fail(r.Drv, BuildFailure, "exit 1", &ev))
		} else {
			require.True(t, p.Succeed(r.Drv, &ev))
		}
		collect()
		// A redelivered result changes nothing.
		require.False(t, p.Succeed(r.Drv, &ev))
		require.False(t, p.Fail(r.Drv, BuildFailure, "again", &ev))
		require.Empty(t, ev.Outcomes)
		require.Empty(t, ev.Releases)
	}
	require.True(t, p.Done())
	require.Len(t, got, len(jobs))
	return got, released, p
}

var (
	ok     = result{status: Succeeded}
	cached = result{status: Cached}
	broke  = result{Failed, BuildFailure, "exit 1"}
)

func skipped(attr string) result {
	return result{Skipped, DependencyFailure, "dependency " + attr + " failed"}
}

func TestPlanRules(t *testing.T) {
	tests := []struct {
		name string
		jobs []Job
		// graph: derivations between jobs, by name, as lists of inputs.
		graph    map[string][]string
		fail     []string
		want     map[string]result
		released []string
		success  bool
	}{
		{
			name: "diamond",
			jobs: []Job{
				{Attr: "d", Drv: "D", DependsOn: []string{"B", "C"}},
				{Attr: "b", Drv: "B", DependsOn: []string{"A"}},
				{Attr: "c", Drv: "C", DependsOn: []string{"A"}},
				{Attr: "a", Drv: "A"},
			},
			want:     map[string]result{"a": ok, "b": ok, "c": ok, "d": ok},
			released: []string{"A", "B", "C", "D"},
			success:  true,
		},
		{
			name: "diamond with a failing side",
			jobs: []Job{
				{Attr: "d", Drv: "D", DependsOn: []string{"B", "C"}},
				{Attr: "b", Drv: "B", DependsOn: []string{"A"}},
				{Attr: "c", Drv: "C", DependsOn: []string{"A"}},
				{Attr: "a", Drv: "A"},
			},
			fail:     []string{"B"},
			want:     map[string]result{"a": ok, "b": broke, "c": ok, "d": skipped("b")},
			released: []string{"A", "B", "C"},
		},
		{
			name: "failure in the middle of a chain",
			jobs: []Job{
				{Attr: "chain1", Drv: "1"},
				{Attr: "chain2", Drv: "2", DependsOn: []string{"1"}},
				{Attr: "chain3", Drv: "3", DependsOn: []string{"2"}},
				{Attr: "chain4", Drv: "4", DependsOn: []string{"3"}},
			},
			fail:     []string{"2"},
			want:     map[string]result{"chain1": ok, "chain2": broke, "chain3": skipped("chain2"), "chain4": skipped("chain2")},
			released: []string{"1", "2"},
		},
		{
			name: "cached job waits for its dependencies and is skipped when one fails",
			jobs: []Job{
				{Attr: "a", Drv: "A"},
				{Attr: "b", Drv: "B", Cached: true, DependsOn: []string{"A"}},
				{Attr: "x", Drv: "X"},
				{Attr: "y", Drv: "Y", Cached: true, DependsOn: []string{"X"}},
				{Attr: "z", Drv: "Z", DependsOn: []string{"Y"}},
			},
			fail:     []string{"X"},
			want:     map[string]result{"a": ok, "b": cached, "x": broke, "y": skipped("x"), "z": skipped("x")},
			released: []string{"A", "X"},
		},
		{
			name: "cached jobs are never built and release their dependents",
			jobs: []Job{
				{Attr: "a", Drv: "A", Cached: true},
				{Attr: "b", Drv: "B", Cached: true, DependsOn: []string{"A"}},
				{Attr: "c", Drv: "C", DependsOn: []string{"B"}},
			},
			want:     map[string]result{"a": cached, "b": cached, "c": ok},
			released: []string{"C"},
			success:  true,
		},
		{
			name: "aliases build once and report each attr",
			jobs: []Job{
				{Attr: "hello", Drv: "H"},
				{Attr: "packages.hello", Drv: "H"},
				{Attr: "user", Drv: "U", DependsOn: []string{"H"}},
			},
			fail:     []string{"H"},
			want:     map[string]result{"hello": broke, "packages.hello": broke, "user": skipped("hello")},
			released: []string{"H"},
		},
		{
			name: "a derivation that failed before is not built and skips its dependents",
			jobs: []Job{
				{Attr: "flaky", Drv: "F", FailedBefore: "failed in an earlier build"},
				{Attr: "alias.flaky", Drv: "F", FailedBefore: "failed in an earlier build"},
				{Attr: "user", Drv: "U", DependsOn: []string{"F"}},
				{Attr: "cached-user", Drv: "C", Cached: true, DependsOn: []string{"U"}},
				{Attr: "free", Drv: "G"},
			},
			want: map[string]result{
				"flaky":       {Failed, CachedFailure, "failed in an earlier build"},
				"alias.flaky": {Failed, CachedFailure, "failed in an earlier build"},
				"user":        skipped("flaky"), "cached-user": skipped("flaky"), "free": ok,
			},
			released: []string{"G"},
		},
		{
			name: "eval errors are failures",
			jobs: []Job{
				{Attr: "good", Drv: "G"},
				{Attr: "bad", EvalError: "error: this job does not evaluate"},
				{Attr: "worse", EvalError: "error: also broken"},
			},
			want: map[string]result{"good": ok,
				"bad":   {Failed, EvalFailure, "error: this job does not evaluate"},
				"worse": {Failed, EvalFailure, "error: also broken"}},
			released: []string{"G"},
		},
		{
			name: "dependencies outside the run are ignored",
			jobs: []Job{
				{Attr: "a", Drv: "A", DependsOn: []string{"/nix/store/not-a-job.drv", "A", "A"}},
				{Attr: "b", Drv: "B", DependsOn: []string{"A", "A"}},
			},
			want:     map[string]result{"a": ok, "b": ok},
			released: []string{"A", "B"},
			success:  true,
		},
		{
			name: "skips name the failed job however far they are",
			jobs: []Job{
				{Attr: "root", Drv: "R"},
				{Attr: "mid", Drv: "M", DependsOn: []string{"R"}},
				{Attr: "leaf", Drv: "L", Cached: true, DependsOn: []string{"M", "O"}},
				{Attr: "other", Drv: "O"},
			},
			fail:     []string{"R"},
			want:     map[string]result{"root": broke, "mid": skipped("root"), "leaf": skipped("root"), "other": ok},
			released: []string{"R", "O"},
		},
		{
			name: "a cycle fails its jobs, the rest proceeds",
			jobs: []Job{
				{Attr: "p", Drv: "P", DependsOn: []string{"Q"}},
				{Attr: "q", Drv: "Q", DependsOn: []string{"P"}},
				{Attr: "after", Drv: "AFTER", DependsOn: []string{"Q"}},
				{Attr: "free", Drv: "F"},
			},
			want: map[string]result{"p": {Failed, DependencyFailure, "dependency cycle"}, "q": {Failed, DependencyFailure, "dependency cycle"},
				"after": {Failed, DependencyFailure, "dependency cycle"}, "free": ok},
			released: []string{"F"},
		},
		{
			name: "jobs wait through derivations that are not jobs",
			jobs: []Job{
				{Attr: "top", Drv: "T"},
				{Attr: "a", Drv: "A"},
				{Attr: "b", Drv: "B"},
			},
			graph: map[string][]string{"T": {"h1", "src"}, "h1": {"h2", "A"}, "h2": {"B"}, "src": nil, "A": {"src"}},
			want:  map[string]result{"top": ok, "a": ok, "b": ok},
			// A waits for src, which waits for nothing.
			released: []string{"B", "A", "T"},
			success:  true,
		},
		{
			name: "a failure skips through derivations that are not jobs, naming the failed job",
			jobs: []Job{
				{Attr: "top", Drv: "T"},
				{Attr: "mid", Drv: "M", Cached: true},
				{Attr: "a", Drv: "A"},
				{Attr: "b", Drv: "B"},
			},
			graph:    map[string][]string{"T": {"h1"}, "h1": {"h2", "M"}, "h2": {"h3"}, "h3": {"A", "B"}, "M": {"h3"}},
			fail:     []string{"A"},
			want:     map[string]result{"top": skipped("a"), "mid": skipped("a"), "a": broke, "b": ok},
			released: []string{"A", "B"},
		},
		{
			name: "a job is released once it waits for nothing through any path",
			jobs: []Job{
				{Attr: "top", Drv: "T"},
				{Attr: "a", Drv: "A"},
				{Attr: "b", Drv: "B", Cached: true},
				{Attr: "c", Drv: "C"},
			},
			graph:    map[string][]string{"T": {"h1", "h2", "A"}, "h1": {"A"}, "h2": {"B"}, "B": {"C"}},
			want:     map[string]result{"top": ok, "a": ok, "b": cached, "c": ok},
			released: []string{"A", "C", "T"},
			success:  true,
		},
		{
			name: "a cycle through a derivation that is not a job fails its jobs",
			jobs: []Job{
				{Attr: "p", Drv: "P"},
				{Attr: "free", Drv: "F"},
			},
			graph:    map[string][]string{"P": {"h"}, "h": {"P"}, "F": {"x"}},
			want:     map[string]result{"p": {Failed, DependencyFailure, "dependency cycle"}, "free": ok},
			released: []string{"F"},
		},
		{
			name:    "no jobs",
			want:    map[string]result{},
			success: true,
		},
	}
	for _, tt := range tests {
		fail := map[string]bool{}
		for _, f := range tt.fail {
			fail[f] = true
		}
		check := func(t *testing.T, jobs []Job, g Graph) {
			got, released, p := simulate(t, jobs, g, fail)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.released, released)
			require.Equal(t, tt.success, p.Succeeded())
			for i, j := range jobs {
				require.Equal(t, got[j.Attr].status, p.Status(i))
			}
		}
		if tt.graph != nil {
			t.Run(tt.name, func(t *testing.T) { check(t, tt.jobs, graphOf(tt.graph)) })
			continue
		}
		// The same rules whether the order comes from the jobs' DependsOn
		// (older evaluators) or from the derivation graph.
		t.Run(tt.name+"/depends on", func(t *testing.T) { check(t, tt.jobs, Graph{}) })
		t.Run(tt.name+"/graph", func(t *testing.T) {
			deps := map[string][]string{}
			jobs := make([]Job, len(tt.jobs))
			for i, j := range tt.jobs {
				if j.Drv != "" {
					deps[j.Drv] = append(deps[j.Drv], j.DependsOn...)
				}
				j.DependsOn = nil
				jobs[i] = j
			}
			check(t, jobs, graphOf(deps))
		})
	}
}

func TestPlanReleasesOnlyWhenAllDependenciesSucceeded(t *testing.T) {
	jobs := []Job{
		{Attr: "a", Drv: "A", System: "x86_64-linux"},
		{Attr: "b", Drv: "B", System: "aarch64-linux"},
		{Attr: "c", Drv: "C", System: "x86_64-linux", DependsOn: []string{"A", "B"}},
	}
	p := New(jobs, Graph{})
	var ev Events
	p.Start(&ev)
	require.Equal(t, []Release{{Drv: "A", System: "x86_64-linux", Jobs: []int32{0}}, {Drv: "B", System: "aarch64-linux", Jobs: []int32{1}}}, ev.Releases)
	require.Equal(t, Counts{Pending: 1, Building: 2}, p.Counts())
	ev.Reset()

	require.False(t, p.Succeed("C", &ev), "C is not building yet")
	require.False(t, p.Succeed("nope", &ev))
	require.True(t, p.Succeed("A", &ev))
	require.Empty(t, ev.Releases)
	require.Equal(t, []Outcome{{Job: 0, Status: Succeeded}}, ev.Outcomes)
	ev.Reset()

	require.True(t, p.Succeed("B", &ev))
	require.Equal(t, []Release{{Drv: "C", System: "x86_64-linux", Jobs: []int32{2}}}, ev.Releases)
	ev.Reset()
	require.False(t, p.Done())

	require.True(t, p.Fail("C", TimeoutFailure, "timed out after 3h", &ev))
	require.Equal(t, []Outcome{{Job: 2, Status: Failed, Failure: TimeoutFailure, Reason: "timed out after 3h"}}, ev.Outcomes)
	require.True(t, p.Done())
	require.False(t, p.Succeeded())
	require.Equal(t, Counts{Succeeded: 2, Failed: 1}, p.Counts())
}

func TestPlanAliasesDisagreeingOnCache(t *testing.T) {
	_, released, _ := simulate(t, []Job{{Attr: "a", Drv: "A", Cached: true}, {Attr: "b", Drv: "A"}}, Graph{}, nil)
	require.Equal(t, []string{"A"}, released)
}

// graphOf numbers a graph given as derivation -> inputs, in sorted order so
// that tests do not depend on map order.
func graphOf(m map[string][]string) Graph {
	var g Graph
	index := map[string]int32{}
	id := func(d string) int32 {
		if k, ok := index[d]; ok {
			return k
		}
		index[d] = int32(len(g.Drvs))
		g.Drvs = append(g.Drvs, d)
		return index[d]
	}
	for _, d := range slices.Sorted(maps.Keys(m)) {
		for _, in := range m[d] {
			g.Edges = append(g.Edges, id(d), id(in))
		}
		id(d)
	}
	return g
}

// A failed job built again: what its failure skipped waits for it again
// (through derivations between jobs, cached jobs included), unless another
// failure still skips it, which its new outcome then names.
func TestPlanRetry(t *testing.T) {
	jobs := []Job{
		{Attr: "x", Drv: "X"},
		{Attr: "w", Drv: "W"},
		{Attr: "y", Drv: "Y"},                                // X via M
		{Attr: "z", Drv: "Z", DependsOn: []string{"X", "W"}}, // X and W
		{Attr: "c", Drv: "C", Cached: true, DependsOn: []string{"Y"}},
		{Attr: "e", EvalError: "boom"},
	}
	p := New(jobs, graphOf(map[string][]string{"Y": {"M"}, "M": {"X"}}))
	var ev Events
	p.Start(&ev)
	ev.Reset()
	require.True(t, p.Fail("X", BuildFailure, "exit 1", &ev))
	require.True(t, p.Fail("W", BuildFailure, "exit 1", &ev))
	require.True(t, p.Done())
	require.Equal(t, Counts{Failed: 3, Skipped: 3}, p.Counts())
	ev.Reset()

	require.False(t, p.Retry("Y", &ev), "skipped, not failed")
	require.False(t, p.Retry("nope", &ev))
	require.False(t, p.Retry("", &ev), "an evaluation error")
	require.True(t, p.Retry("X", &ev))
	require.Equal(t, []Release{{Drv: "X", Jobs: []int32{0}}}, ev.Releases)
	require.Equal(t, []Outcome{{Job: 3, Status: Skipped, Failure: DependencyFailure, Reason: "dependency w failed", Cause: 1}}, ev.Outcomes)
	require.Equal(t, Counts{Building: 1, Pending: 2, Failed: 2, Skipped: 1}, p.Counts())
	require.False(t, p.Retry("X", &ev), "building already")
	ev.Reset()

	require.True(t, p.Succeed("X", &ev))
	require.Equal(t, []Release{{Drv: "Y", Jobs: []int32{2}}}, ev.Releases)
	ev.Reset()
	require.True(t, p.Succeed("Y", &ev))
	require.Equal(t, []Outcome{{Job: 2, Status: Succeeded}, {Job: 4, Status: Cached}}, ev.Outcomes)
	require.True(t, p.Done())
	require.Equal(t, Counts{Succeeded: 2, Cached: 1, Failed: 2, Skipped: 1}, p.Counts())
	require.False(t, p.Retry("X", &ev), "succeeded")

	// Failing again skips the same jobs again.
	ev.Reset()
	require.True(t, p.Retry("W", &ev))
	require.Empty(t, ev.Outcomes)
	ev.Reset()
	require.True(t, p.Fail("W", BuildFailure, "exit 2", &ev))
	require.Equal(t, []Outcome{{Job: 1, Status: Failed, Failure: BuildFailure, Reason: "exit 2"},
		{Job: 3, Status: Skipped, Failure: DependencyFailure, Reason: "dependency w failed", Cause: 1}}, ev.Outcomes)
	require.Equal(t, Counts{Succeeded: 2, Cached: 1, Failed: 2, Skipped: 1}, p.Counts())
}
