package evaluator

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	"nixbus.dev/nixbus/pkg/nix"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/evaluator/internal/eval"
)

func TestCachedJobs(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	dir := exampleFlake(t)
	cache := "file://" + filepath.Join(t.TempDir(), "cache")
	n := testNix()

	evaluate := func(t *testing.T, cfg Config, id string, nixes ...*nix.Nix) runMsgs {
		t.Helper()
		cfg.Concurrency = 1
		d := Deps{}
		if len(nixes) > 0 {
			d.Nix = nixes[0]
		}
		start(t, js, cfg, d)
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
		n := testNix()
		r := evaluate(t, testConfig(t), t.Name(), n)
		requireExampleJobs(t, r, bus.RunID(t.Name()), "chain1")
		// The jobs stream out, but those asking nix wait for one another:
		// one nix path-info for all of them.
		require.Equal(t, map[string]int{"path-info": 1}, n.Calls())
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

// recordEvalJobs returns what nix-eval-jobs would print for the example
// flake in dir, with real derivations so that dependencies can be read,
// and a garbage line and a record of another system after chain2.
func recordEvalJobs(t *testing.T, dir string) []string {
	t.Helper()
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
	return lines
}

// fakeNixEvalJobs puts first on PATH a nix-eval-jobs that writes its
// arguments to argsFile and prints lines. With after > 0, it prints the
// first `after` lines, then waits until something is written to the FIFO
// gate before printing the rest.
func fakeNixEvalJobs(t *testing.T, lines []string, after int) (argsFile, gate string) {
	t.Helper()
	bin := t.TempDir()
	argsFile = filepath.Join(bin, "args")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '" + argsFile + "'\n"
	write := func(name string, lines []string) {
		out := filepath.Join(bin, name)
		require.NoError(t, os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
		script += "cat '" + out + "'\n"
	}
	if after > 0 {
		gate = filepath.Join(bin, "gate")
		require.NoError(t, syscall.Mkfifo(gate, 0o600))
		write("first.jsonl", lines[:after])
		script += "read go < '" + gate + "'\n"
		lines = lines[after:]
	}
	write("rest.jsonl", lines)
	require.NoError(t, os.WriteFile(filepath.Join(bin, "nix-eval-jobs"), []byte(script), 0o755))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return argsFile, gate
}

// TestFakeNixEvalJobs puts a recorded nix-eval-jobs first on PATH and runs
// a change through the service with it.
func TestFakeNixEvalJobs(t *testing.T) {
	dir := exampleFlake(t)
	argsFile, _ := fakeNixEvalJobs(t, recordEvalJobs(t, dir), 0)

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
	series := map[string]int{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			values[f.GetName()] += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			series[f.GetName()]++
		}
	}
	// Every labelled series exists from the start, used or not.
	require.Equal(t, 2, series["nixbus_evaluator_runs_total"], "ok, error")
	require.Equal(t, 2, series["nixbus_evaluator_eval_seconds"], "builtin, nix-eval-jobs")
	require.Equal(t, 3, series["nixbus_evaluator_cache_paths_total"], "cached, missing, error")
	require.Equal(t, map[string]float64{
		"nixbus_evaluator_garbage_lines_total": 1,
		"nixbus_evaluator_job_errors_total":    1,
		"nixbus_evaluator_jobs_total":          8,
		"nixbus_evaluator_jobs_dropped_total":  1,
		"nixbus_evaluator_eval_seconds":        1,
		// Created at start-up (gauges count 0 here).
		"nixbus_evaluator_cache_paths_total":   0,
		"nixbus_evaluator_evaluations_queued":  0,
		"nixbus_evaluator_evaluations_running": 0,
		"nixbus_evaluator_runs_total":          1,
	}, values)

	args, err := os.ReadFile(argsFile)
	require.NoError(t, err)
	require.Contains(t, string(args), "\n--workers\n3\n--max-memory-size\n2048\n--gc-roots-dir\n"+cfg.WorkDir+"/run-"+run+"-")
	require.Contains(t, string(args), "\n--force-recurse\n--check-cache-status\n--flake\npath:"+dir+"#hydraJobs\n")
}

// TestJobsStreamOutDuringEvaluation: the evaluator publishes a job as soon
// as its record is read, not after the walk. The fake nix-eval-jobs prints
// two records and then waits until the test has read a job of the run from
// the bus; only then does it print the rest.
func TestJobsStreamOutDuringEvaluation(t *testing.T) {
	dir := exampleFlake(t)
	lines := recordEvalJobs(t, dir)
	_, gate := fakeNixEvalJobs(t, lines, 2)

	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	cfg := testConfig(t)
	cfg.Builtin = false
	start(t, js, cfg, Deps{})
	ev := &nixbuspb.ChangeEvent{EventId: t.Name(), Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: "example", LocalPath: dir}
	run := bus.RunID(ev.EventId)
	cons, err := js.OrderedConsumer(t.Context(), bus.StreamRuns, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.RunSubject(run, bus.RunJobKind)},
	})
	require.NoError(t, err)
	publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))

	// The evaluator is blocked with records left to print: a job on the
	// bus now was published while the evaluation ran.
	msg, err := cons.Next(jetstream.FetchMaxWait(60 * time.Second))
	require.NoError(t, err, "no job published while the evaluator waits")
	var job nixbuspb.Job
	require.NoError(t, bus.Decode(msg.Data(), &job))
	var first map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.Equal(t, first["attr"], job.Attr, "the first record's job")

	f, err := os.OpenFile(gate, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("go\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())

	r := waitEvaluated(t, js, run)
	requireOneRun(t, r)
	require.Empty(t, r.done[0].Error)
	requireExampleJobs(t, r, run, "nested.hello")
	// Jobs, then the graph between them, then EvalDone.
	kinds := slices.Compact(slices.Clone(r.order))
	require.Equal(t, []string{bus.RunStartedKind, bus.RunJobKind, bus.RunGraphKind, bus.RunEvalKind}, kinds)
}

// TestPathInfoBatchesDoNotOverflow: jobs whose cache status takes a nix
// path-info wait for one another until their outputs fill a batch; one
// that would overflow it starts the next batch, rather than a second nix
// process asking about the few paths beyond.
func TestPathInfoBatchesDoNotOverflow(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	b := &eval.Builtin{Nix: testNix(), Workers: 2, Logger: discardLogger()}
	res, err := b.Eval(t.Context(), "path:"+exampleFlake(t)+"#hydraJobs")
	require.NoError(t, err)
	// Two outputs per job (the second one never built), status unknown.
	var recs []eval.Record
	for _, r := range res.Records {
		if r.Error == "" {
			r.Outputs = map[string]string{"out": r.Outputs["out"], "dev": r.Outputs["out"] + "-dev"}
			r.CacheKnown, r.Cached = false, false
			recs = append(recs, r)
		}
	}
	require.Len(t, recs, 7)

	cfg := testConfig(t)
	cfg.PathInfoBatch = 5
	n := testNix()
	s, err := New(cfg, Deps{JS: js, Nix: n, Logger: discardLogger()})
	require.NoError(t, err)
	h := &handler{s: s}
	run := bus.RunID(t.Name())
	win, stop := h.runWindow(t.Context(), run)
	defer stop()
	st := h.newJobStream(run, nil, win, discardLogger())
	// One record at a time, as a slow evaluator hands them over.
	for _, r := range recs {
		require.NoError(t, st.publishBatch(t.Context(), []eval.Record{r}))
	}
	require.NoError(t, st.flushHeld(t.Context()))
	require.NoError(t, win.Flush(t.Context()))
	require.Equal(t, 7, st.jobs)
	// Two jobs (4 paths) per batch of 5: 4 nix path-info for 7 jobs, not
	// two per batch of 6 paths (cut into 5 + 1).
	require.Equal(t, map[string]int{"path-info": 4}, n.Calls())
}
