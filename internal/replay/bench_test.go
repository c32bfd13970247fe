package replay

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/dag"
	"nixbus.dev/nixbus/pkg/drv"
)

// Shapes of generated graphs.
const (
	// sparse: fan-in up to 4, each job reaching a few others.
	sparse = "sparse"
	// dense: each job reaches ~100 others through helpers (10 helpers of
	// 10 jobs each), ~10 M job-to-job pairs for 100,000 jobs.
	dense = "dense"
)

// generate writes a synthetic evaluation of n jobs with as many
// intermediate (non-job) derivations, shaped like a package set: jobs
// depend on earlier jobs and on their own helper (source, patch, wrapper).
// In the sparse shape helpers have up to two earlier jobs or helpers as
// inputs; in the dense one each helper has 10 earlier jobs and each job 9
// more helpers. 1% of builds fail, 10% of jobs are cached, 0.1% do not
// evaluate, a fifth are aarch64.
func generate(tb testing.TB, dir string, n int, shape string) Options {
	tb.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	hash := func(kind byte, i int) string {
		return fmt.Sprintf("%c%031d", kind, i)
	}
	job := func(i int) string { return "/nix/store/" + hash('j', i) + "-pkg" + fmt.Sprint(i) + ".drv" }
	helper := func(i int) string { return "/nix/store/" + hash('h', i) + "-src" + fmt.Sprint(i) + ".drv" }
	system := func(i int) string {
		if i%5 == 4 {
			return "aarch64-linux"
		}
		return "x86_64-linux"
	}

	dpath := filepath.Join(dir, "derivations.json")
	df, err := os.Create(dpath)
	require.NoError(tb, err)
	dw := bufio.NewWriterSize(df, 1<<20)
	jpath := filepath.Join(dir, "jobs.jsonl")
	jf, err := os.Create(jpath)
	require.NoError(tb, err)
	jw := bufio.NewWriterSize(jf, 1<<20)
	fpath := filepath.Join(dir, "fail.txt")
	ff, err := os.Create(fpath)
	require.NoError(tb, err)
	fw := bufio.NewWriter(ff)

	env := strings.Repeat("x", 200)
	writeDrv := func(first bool, path, sys string, inputs []string) {
		if !first {
			dw.WriteString(",\n")
		}
		fmt.Fprintf(dw, `%q: {"outputs": {"out": {"path": %q}}, "inputSrcs": ["/nix/store/%s-builder.sh"], "inputDrvs": {`,
			path, strings.TrimSuffix(path, ".drv"), hash('s', 0))
		for k, in := range inputs {
			if k > 0 {
				dw.WriteString(", ")
			}
			fmt.Fprintf(dw, `%q: ["out"]`, in)
		}
		fmt.Fprintf(dw, `}, "system": %q, "builder": "/bin/sh", "args": ["-c", "genericBuild \"$@\""], `+
			`"env": {"name": %q, "out": %q, "buildPhase": "make -j$NIX_BUILD_CORES \\\n%s", "PATH": "/usr/bin:/bin"}}`,
			sys, filepath.Base(path), strings.TrimSuffix(path, ".drv"), env)
	}
	dw.WriteString("{\n")
	for i := range n {
		// Helper i: up to two earlier jobs or helpers (dense: ten jobs).
		var hin []string
		switch {
		case i == 0:
		case shape == dense:
			for range 10 {
				hin = append(hin, job(rng.IntN(i)))
			}
		default:
			for range rng.IntN(3) {
				if rng.IntN(2) == 0 {
					hin = append(hin, job(rng.IntN(i)))
				} else {
					hin = append(hin, helper(rng.IntN(i)))
				}
			}
		}
		slices.Sort(hin)
		hin = slices.Compact(hin)
		writeDrv(i == 0, helper(i), system(i), hin)
		// Job i: its helper and up to three earlier jobs, mostly recent ones
		// so that the DAG is deep as well as wide.
		jin := []string{helper(i)}
		for range rng.IntN(4) {
			if i == 0 {
				break
			}
			back := min(i, 1+rng.IntN(200))
			jin = append(jin, job(i-back))
		}
		if shape == dense && i > 0 {
			for range 9 {
				jin = append(jin, helper(rng.IntN(i)))
			}
		}
		slices.Sort(jin)
		jin = slices.Compact(jin)
		writeDrv(false, job(i), system(i), jin)

		attr := fmt.Sprintf("pkgs.pkg%d", i)
		switch {
		case rng.IntN(1000) == 0:
			fmt.Fprintf(jw, `{"attr": %q, "attrPath": ["pkgs", "pkg%d"], "error": "error: attribute 'missing' not found"}`+"\n", attr, i)
			continue
		case rng.IntN(100) == 0:
			fmt.Fprintln(fw, job(i))
		}
		fmt.Fprintf(jw, `{"attr": %q, "attrPath": ["pkgs", "pkg%d"], "drvPath": %q, "name": "pkg%d-1.0", `+
			`"outputs": {"out": %q}, "system": %q, "isCached": %t}`+"\n",
			attr, i, job(i), i, strings.TrimSuffix(job(i), ".drv"), system(i), rng.IntN(10) == 0)
	}
	dw.WriteString("\n}\n")
	for _, f := range []struct {
		w *bufio.Writer
		f *os.File
	}{{dw, df}, {jw, jf}, {fw, ff}} {
		require.NoError(tb, f.w.Flush())
		require.NoError(tb, f.f.Close())
	}
	return Options{JobsPath: jpath, DerivationsPath: dpath, FailPath: fpath}
}

// peakHeap samples the heap's live objects until stop is called, and
// returns the highest value seen.
func peakHeap() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	var mu sync.Mutex
	peak := read()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				v := read()
				mu.Lock()
				peak = max(peak, v)
				mu.Unlock()
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return max(peak, read())
	}
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplay plans and replays generated evaluations of 1,000, 10,000
// and 100,000 jobs, sparse and dense: reading the jobs, parsing the
// derivation graph, reducing it to what lies between jobs, building the DAG
// and replaying it with instant builds. Target: 100,000 jobs in under 2 s
// and 500 MB, in both shapes.
func BenchmarkReplay(b *testing.B) {
	for _, c := range []struct {
		n     int
		shape string
	}{{1_000, sparse}, {10_000, sparse}, {100_000, sparse}, {100_000, dense}} {
		b.Run(fmt.Sprintf("shape=%s/jobs=%d", c.shape, c.n), func(b *testing.B) {
			n := c.n
			o := generate(b, b.TempDir(), n, c.shape)
			fi, err := os.Stat(o.DerivationsPath)
			require.NoError(b, err)
			var st Stats
			var peak uint64
			var cpu time.Duration
			b.ResetTimer()
			for range b.N {
				runtime.GC()
				stop := peakHeap()
				c0 := cpuTime()
				st, err = Replay(b.Context(), o, io.Discard)
				cpu = cpuTime() - c0
				peak = max(peak, stop())
				require.NoError(b, err)
			}
			b.StopTimer()
			// CPU time (all threads, GC included) does not depend on what
			// else the machine runs, unlike the wall-clock phases.
			b.ReportMetric(float64(cpu.Microseconds())/1000, "cpu-ms")
			b.ReportMetric(float64(st.ReadJobs.Microseconds())/1000, "read-jobs-ms")
			b.ReportMetric(float64(st.ParseDerivations.Microseconds())/1000, "parse-drv-ms")
			b.ReportMetric(float64(st.JobDeps.Microseconds())/1000, "jobdeps-ms")
			b.ReportMetric(float64(st.Plan.Microseconds())/1000, "plan-ms")
			b.ReportMetric(float64(st.Replay.Microseconds())/1000, "replay-ms")
			b.ReportMetric(float64(st.Total.Microseconds())/1000, "total-ms")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
			b.ReportMetric(float64(fi.Size())/(1<<20), "drv-json-MB")
			b.ReportMetric(float64(st.Edges), "graph-edges")
			b.ReportMetric(float64(st.Between), "between-drvs")
			if n == 100_000 {
				// The targets, printed with the figures by make bench.
				total, heap := st.Total.Seconds(), float64(peak)/(1<<20)
				b.Logf("TARGET plan %s 100,000 jobs: wall %.2f s, cpu %.2f s (target < 2 s), peak heap %.0f MB (target < 500 MB): %s",
					c.shape, total, cpu.Seconds(), heap, verdict(total < 2 && heap < 500))
			}
		})
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// TestReplayGenerated checks the generator and the replay agree on a
// small evaluation: every job gets an outcome, failures skip dependents.
func TestReplayGenerated(t *testing.T) {
	o := generate(t, t.TempDir(), 2000, sparse)
	var out strings.Builder
	st, err := Replay(t.Context(), o, &out)
	require.NoError(t, err)
	require.Equal(t, 2000, st.Jobs)
	require.Equal(t, st.Jobs, strings.Count(out.String(), "\n"))
	require.Equal(t, st.Jobs, st.Counts.Succeeded+st.Counts.Failed+st.Counts.Skipped+st.Counts.Cached)
	require.Positive(t, st.Counts.Failed)
	require.Positive(t, st.Counts.Skipped)
	require.Positive(t, st.Counts.Cached)
	require.Greater(t, st.Edges, st.Jobs)
	require.Equal(t, 4000, st.Derivations)
}

// TestReplayGraphAgreesWithJobPairs checks, on generated evaluations of
// both shapes, that planning by the graph between jobs gives every job the
// outcome it gets when each job lists the jobs it reaches through non-job
// derivations (the rule the planner had from the start), computed here by
// a plain search per job.
func TestReplayGraphAgreesWithJobPairs(t *testing.T) {
	for _, shape := range []string{sparse, dense} {
		t.Run(shape, func(t *testing.T) {
			o := generate(t, t.TempDir(), 2000, shape)
			var out strings.Builder
			_, err := Replay(t.Context(), o, &out)
			require.NoError(t, err)

			jobs, _, err := readJobs(o.JobsPath, DefaultSystems)
			require.NoError(t, err)
			fail, err := readFail(o.FailPath)
			require.NoError(t, err)
			f, err := os.Open(o.DerivationsPath)
			require.NoError(t, err)
			g, err := drv.ParseShowDerivation(f)
			require.NoError(t, f.Close())
			require.NoError(t, err)
			isJob := map[string]bool{}
			for _, j := range jobs {
				if j.Drv != "" && j.EvalError == "" {
					isJob[j.Drv] = true
				}
			}
			pairs := 0
			for i := range jobs {
				if !isJob[jobs[i].Drv] {
					continue
				}
				seen := map[string]bool{}
				stack := slices.Clone(g[jobs[i].Drv])
				for len(stack) > 0 {
					d := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					if seen[d] {
						continue
					}
					seen[d] = true
					if isJob[d] {
						jobs[i].DependsOn = append(jobs[i].DependsOn, d)
						continue
					}
					stack = append(stack, g[d]...)
				}
				pairs += len(jobs[i].DependsOn)
			}
			if shape == dense {
				require.Greater(t, pairs, 50*len(jobs), "dense: each job reaches many others")
			}
			p := dag.New(jobs, dag.Graph{})
			var ev dag.Events
			p.Start(&ev)
			status, _ := simulate(p, &ev, len(jobs), fail)
			require.True(t, p.Done())
			var want strings.Builder
			require.NoError(t, writeLines(&want, jobs, status))
			require.Equal(t, want.String(), out.String())
			require.Contains(t, out.String(), `"status":"skipped"`)
		})
	}
}
