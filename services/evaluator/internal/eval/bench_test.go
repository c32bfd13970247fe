package eval

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/corpus"
	"nixbus.dev/nixbus/pkg/evaljobs"
	"nixbus.dev/nixbus/pkg/nix"
)

// childCPU is the CPU time of this process's waited-for children.
func childCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBuiltinCorpus evaluates the corpus job set (5,030 python3 and
// perl packages of a real nixpkgs, 326 of them eval errors) with the
// built-in evaluator, then with one bare `nix eval` of the same jobs'
// drvPaths under builtins.tryEval, and compares: the same jobs, an error
// with nix's own message for every attribute tryEval caught, and the time.
// Target: builtin <= 1.3x the bare nix eval. The built-in evaluator goes
// first, so it pays for writing the derivations to the store.
func BenchmarkBuiltinCorpus(b *testing.B) {
	nixpkgs := corpus.Nixpkgs(b)
	dir := corpus.Flake(b, nixpkgs, corpus.Full)
	n := &nix.Nix{Options: map[string]string{"substituters": ""}, MaxMemoryMB: 4096}
	for range b.N {
		cpu0, t0 := childCPU(), time.Now()
		res, err := (&Builtin{Nix: n, Logger: discard()}).Eval(b.Context(), "path:"+dir+"#hydraJobs")
		builtin, builtinCPU := time.Since(t0), childCPU()-cpu0
		require.NoError(b, err)

		cpu0, t0 = childCPU(), time.Now()
		out, err := n.Output(b.Context(), []string{"eval"}, "--json", "--no-eval-cache", "path:"+dir+"#hydraJobs", "--apply", corpus.TryEvalApply)
		bare, bareCPU := time.Since(t0), childCPU()-cpu0
		require.NoError(b, err)

		var want map[string]map[string]*string
		require.NoError(b, json.Unmarshal(out, &want))
		got := byAttr(res.Records)
		jobs, errs := 0, 0
		for set, attrs := range want {
			for name, drv := range attrs {
				jobs++
				r, ok := got[evaljobs.AttrName([]string{set, name})]
				require.True(b, ok, "%s.%s missing", set, name)
				if drv == nil {
					errs++
					require.NotEmpty(b, r.Error, "%s.%s", set, name)
					require.NotEqual(b, "evaluation failed", r.Error, "%s.%s: nix's own message", set, name)
					continue
				}
				require.Empty(b, r.Error, "%s.%s", set, name)
				require.Equal(b, *drv, r.DrvPath, "%s.%s", set, name)
			}
		}
		require.Len(b, got, jobs, "no record invented")
		ratio := builtin.Seconds() / bare.Seconds()
		b.ReportMetric(float64(jobs), "jobs")
		b.ReportMetric(float64(errs), "eval-errors")
		b.ReportMetric(builtin.Seconds(), "builtin-s")
		b.ReportMetric(bare.Seconds(), "nix-eval-s")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(builtinCPU.Seconds()/bareCPU.Seconds(), "cpu-ratio")
		verdict := "met"
		if ratio > 1.3 {
			verdict = "MISSED"
		}
		fmt.Printf("TARGET builtin evaluator: %d jobs, %d eval errors with their messages: %.1f s (cpu %.1f s); bare nix eval with tryEval: %.1f s (cpu %.1f s); ratio %.2fx (cpu %.2fx) (target <= 1.3x): %s\n",
			jobs, errs, builtin.Seconds(), builtinCPU.Seconds(), bare.Seconds(), bareCPU.Seconds(), ratio, builtinCPU.Seconds()/bareCPU.Seconds(), verdict)
		if ratio > 1.3 {
			b.Errorf("built-in evaluator took %.2fx the bare nix eval, over the 1.3x target", ratio)
		}
	}
}
