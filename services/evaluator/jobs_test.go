package evaluator

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/evaluator/internal/eval"
)

func TestCachedJobs(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	dir := exampleFlake(t)
	cache := "file://" + filepath.Join(t.TempDir(), "cache")
	n := testNix()

	evaluate := func(t *testing.T, cfg Config, id string) runMsgs {
		t.Helper()
		cfg.Concurrency = 1
		start(t, js, cfg, Deps{})
		ev := &nixbuspb.ChangeEvent{EventId: id, Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: "example", LocalPath: dir}
		publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))
		r := waitEvaluated(t, js, bus.RunID(ev.EventId))
		requireOneRun(t, r)
		return r
	}

	var chain1 *nixbuspb.Job
	t.Run("empty cache", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.CacheURL = cache
		r := evaluate(t, cfg, t.Name())
		requireExampleJobs(t, r, bus.RunID(t.Name()))
		chain1 = r.jobs["chain1"]
	})
	// Build chain1 and put it in the cache.
	_, err := n.Output(t.Context(), []string{"build"}, "--no-link", chain1.DrvPath)
	require.NoError(t, err)
	_, err = n.Output(t.Context(), []string{"copy"}, "--to", cache, chain1.Outputs["out"])
	require.NoError(t, err)

	t.Run("in the cache", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.CacheURL = cache
		cfg.PathInfoBatch = 2
		r := evaluate(t, cfg, t.Name())
		requireExampleJobs(t, r, bus.RunID(t.Name()), "chain1")
	})
	t.Run("in the local store", func(t *testing.T) {
		r := evaluate(t, testConfig(t), t.Name())
		requireExampleJobs(t, r, bus.RunID(t.Name()), "chain1")
	})
	t.Run("other systems are dropped", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Systems = []string{"aarch64-linux"}
		r := evaluate(t, cfg, t.Name())
		require.EqualValues(t, 7, r.done[0].DroppedJobs)
		require.Len(t, r.jobs, 1)
		require.Equal(t, "this job does not evaluate", r.jobs["eval-error"].EvalError)
	})
}

// TestFakeNixEvalJobs puts a recorded nix-eval-jobs first on PATH and runs
// a change through the service with it.
func TestFakeNixEvalJobs(t *testing.T) {
	dir := exampleFlake(t)
	// Record what nix-eval-jobs would print for this flake, with real
	// derivations so that dependencies can be read.
	b := &eval.Builtin{Nix: testNix(), Workers: 2, Logger: discardLogger()}
	res, err := b.Eval(t.Context(), "path:"+dir+"#hydraJobs")
	require.NoError(t, err)
	var lines []string
	for _, rec := range res.Records {
		line := map[string]any{"attr": strings.Join(rec.AttrPath, "."), "attrPath": rec.AttrPath}
		if rec.Error != "" {
			line["error"] = "\x1b[31;1merror:\x1b[0m " + rec.Error + "\n(use '--show-trace' to show detailed location information)"
		} else {
			line["drvPath"], line["name"], line["system"], line["outputs"] = rec.DrvPath, rec.Name, rec.System, rec.Outputs
			line["isCached"] = rec.Attr == "nested.hello"
			line["neededBuilds"] = []string{rec.DrvPath}
		}
		data, err := json.Marshal(line)
		require.NoError(t, err)
		lines = append(lines, string(data))
		if rec.Attr == "chain2" {
			lines = append(lines, "this line is garbage {")
			lines = append(lines, `{"attr":"other","attrPath":["other"],"drvPath":"/nix/store/00000000000000000000000000000000-other.drv","system":"aarch64-linux","outputs":{"out":"/nix/store/00000000000000000000000000000000-other"}}`)
		}
	}
	bin := t.TempDir()
	out := filepath.Join(bin, "out.jsonl")
	require.NoError(t, os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	argsFile := filepath.Join(bin, "args")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '" + argsFile + "'\ncat '" + out + "'\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "nix-eval-jobs"), []byte(script), 0o755))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	cfg := testConfig(t)
	cfg.Builtin = false
	cfg.Workers, cfg.MaxMemoryMB = 3, 2048
	reg := prometheus.NewRegistry()
	start(t, js, cfg, Deps{Registerer: reg})
	ev := &nixbuspb.ChangeEvent{EventId: t.Name(), Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: "example", LocalPath: dir}
	publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))
	run := bus.RunID(ev.EventId)
	r := waitEvaluated(t, js, run)
	requireOneRun(t, r)
	require.Empty(t, r.done[0].Error)
	require.EqualValues(t, 1, r.done[0].DroppedJobs)
	requireExampleJobs(t, r, run, "nested.hello")
	families, err := reg.Gather()
	require.NoError(t, err)
	values := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			values[f.GetName()] += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	require.Equal(t, map[string]float64{
		"nixbus_evaluator_garbage_lines_total": 1,
		"nixbus_evaluator_job_errors_total":    1,
		"nixbus_evaluator_jobs_total":          8,
		"nixbus_evaluator_jobs_dropped_total":  1,
		"nixbus_evaluator_eval_seconds":        1,
		"nixbus_evaluator_runs_total":          1,
	}, values)

	args, err := os.ReadFile(argsFile)
	require.NoError(t, err)
	require.Contains(t, string(args), "\n--workers\n3\n--max-memory-size\n2048\n--gc-roots-dir\n"+cfg.WorkDir+"/run-"+run+"-")
	require.Contains(t, string(args), "\n--force-recurse\n--check-cache-status\n--flake\npath:"+dir+"#hydraJobs\n")
}
