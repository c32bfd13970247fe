// Package replay runs the planner's real scheduling code on a recorded
// evaluation with simulated instant builds: the core of `nixbus plan`.
// Operators use it to see what a change would build; the benchmarks use it
// to measure planning at nixpkgs scale.
//
// Inputs:
//   - jobs: nix-eval-jobs JSON lines (attr, attrPath, drvPath, outputs,
//     system, name, isCached or cacheStatus, error). Blank lines are
//     skipped; any other line that is not a JSON object is an error naming
//     its line number (a recording that is garbled is not silently
//     half-planned).
//   - derivations: `nix derivation show --recursive` (or `nix
//     show-derivation -r`) JSON. Without it, .drv files are read from the
//     local store.
//   - fail: derivation paths that fail, one a line (blank lines and lines
//     starting with # are ignored). All other builds succeed.
//
// Output: one JSON line per job, in the order of the jobs file,
// {"attr","drvPath","status","reason"} with status succeeded, failed,
// skipped or cached; and a summary with timings on stderr.
package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/dag"
	"nixbus.dev/nixbus/pkg/drv"
	"nixbus.dev/nixbus/pkg/evaljobs"
)

// DefaultSystems are the systems planned unless Options says otherwise.
var DefaultSystems = []string{"x86_64-linux", "aarch64-linux"}

// Options name the recorded evaluation.
type Options struct {
	// JobsPath is the nix-eval-jobs JSON lines file (required).
	JobsPath string
	// DerivationsPath is the derivation graph JSON; empty reads .drv files
	// from the store.
	DerivationsPath string
	// FailPath lists derivations whose builds fail; empty: none fail.
	FailPath string
	// Systems are the systems whose jobs are planned; empty: DefaultSystems.
	Systems []string
}

// Line is one job's outcome as printed.
type Line struct {
	Attr    string `json:"attr"`
	DrvPath string `json:"drvPath"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
}

// Stats describe one replay.
type Stats struct {
	Jobs, Dropped, Derivations int
	// Edges and Between (derivations between jobs that are not jobs) are
	// the graph the planner orders the jobs by.
	Edges, Between int
	Counts         dag.Counts
	Builds         int
	// ReadJobs and ParseDerivations run at once; both count from the start.
	ReadJobs, ParseDerivations time.Duration
	// JobDeps is the time taken to reduce the graph to what lies between jobs.
	JobDeps, Plan, Replay, Total time.Duration
}

// Run replays the evaluation o names, printing outcomes on stdout and the
// summary on stderr.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	w := bufio.NewWriterSize(stdout, 256<<10)
	st, err := Replay(ctx, o, w)
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write outcomes: %w", err)
	}
	_, err = fmt.Fprintf(stderr, "plan: %d jobs (%d dropped: other systems), %d derivations (%d between jobs, %d edges), %d builds\n"+
		"plan: %d succeeded, %d failed, %d skipped, %d cached\n"+
		"plan: read jobs %s and derivations %s (at once), graph between jobs %s, plan %s, replay %s, total %s\n",
		st.Jobs, st.Dropped, st.Derivations, st.Between, st.Edges, st.Builds,
		st.Counts.Succeeded, st.Counts.Failed, st.Counts.Skipped, st.Counts.Cached,
		ms(st.ReadJobs), ms(st.ParseDerivations), ms(st.JobDeps), ms(st.Plan), ms(st.Replay), ms(st.Total))
	if err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

// Replay does the work of Run, writing outcome lines to out.
func Replay(ctx context.Context, o Options, out io.Writer) (Stats, error) {
	var st Stats
	t0 := time.Now()
	systems := o.Systems
	if len(systems) == 0 {
		systems = DefaultSystems
	}
	// The jobs and the derivation graph are independent: read them at once.
	var (
		g       drv.Graph
		gErr    error
		gDone   = make(chan struct{})
		readDrv time.Duration
	)
	go func() {
		defer close(gDone)
		if o.DerivationsPath == "" {
			g = drv.NewStoreGraph()
			return
		}
		ig, err := readDerivations(o.DerivationsPath)
		if err == nil {
			st.Derivations, g = ig.Derivations(), ig
		}
		gErr = err
		readDrv = time.Since(t0)
	}()
	jobs, dropped, err := readJobs(o.JobsPath, systems)
	var fail map[string]bool
	if err == nil {
		fail, err = readFail(o.FailPath)
	}
	st.ReadJobs = time.Since(t0)
	<-gDone
	if err != nil {
		return st, err
	}
	if gErr != nil {
		return st, gErr
	}
	st.Jobs, st.Dropped = len(jobs), dropped
	st.ParseDerivations = readDrv
	t2 := time.Now()

	drvs := make([]string, 0, len(jobs))
	for _, j := range jobs {
		if j.Drv != "" && j.EvalError == "" {
			drvs = append(drvs, j.Drv)
		}
	}
	// What the evaluator puts on the bus: the graph between the jobs.
	red, err := drv.Reduce(ctx, g, drvs)
	if err != nil {
		return st, err
	}
	g = nil
	st.Edges, st.Between = len(red.Edges)/2, len(red.Drvs)-red.Jobs
	t3 := time.Now()
	st.JobDeps = t3.Sub(t2)

	p := dag.New(jobs, dag.Graph{Drvs: red.Drvs, Edges: red.Edges})
	red = drv.Reduced{}
	var ev dag.Events
	p.Start(&ev)
	t4 := time.Now()
	st.Plan = t4.Sub(t3)

	var status []dag.Outcome
	status, st.Builds = simulate(p, &ev, len(jobs), fail)
	st.Counts = p.Counts()
	if !p.Done() {
		return st, fmt.Errorf("replay ended with %d jobs pending", st.Counts.Pending+st.Counts.Building)
	}
	if err := writeLines(out, jobs, status); err != nil {
		return st, err
	}
	st.Replay = time.Since(t4)
	st.Total = time.Since(t0)
	return st, nil
}

func writeLines(out io.Writer, jobs []dag.Job, status []dag.Outcome) error {
	// Encode writes what json.Marshal gives and a newline, reusing its
	// buffer from line to line.
	enc := json.NewEncoder(out)
	for i, j := range jobs {
		line := Line{Attr: j.Attr, DrvPath: j.Drv, Status: status[i].Status.String(), Reason: status[i].Reason}
		if err := enc.Encode(line); err != nil {
			return fmt.Errorf("write outcome of %s: %w", j.Attr, err)
		}
	}
	return nil
}

func readJobs(path string, systems []string) ([]dag.Job, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read jobs: %w", err)
	}
	hint := 0
	if fi, err := f.Stat(); err == nil {
		hint = int(min(fi.Size()/256, 1<<22)) // nix-eval-jobs lines are longer
	}
	jobs, dropped, err := parseJobs(f, systems, hint)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read jobs %s: %w", path, err)
	}
	return jobs, dropped, nil
}

// parseJobs reads nix-eval-jobs lines; jobs of other systems are dropped
// (those with an error are kept: they have no system). A repeated attribute
// keeps its first line.
func parseJobs(r io.Reader, systems []string, hint int) ([]dag.Job, int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	jobs := make([]dag.Job, 0, hint)
	seen := make(map[string]bool, hint)
	dropped := 0
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		// The evaluator's reading of the line: the same names, cache
		// status and eval errors as a real run.
		j, err := evaljobs.ParseLineSkipOutputs(line)
		if err != nil {
			return nil, 0, fmt.Errorf("line %d: %w", n, err)
		}
		if seen[j.Attr] {
			continue
		}
		seen[j.Attr] = true
		if j.Error == "" && !slices.Contains(systems, j.System) {
			dropped++
			continue
		}
		jobs = append(jobs, dag.Job{Attr: j.Attr, Drv: j.DrvPath, System: j.System, EvalError: j.Error, Cached: j.CacheKnown && j.Cached})
	}
	if err := sc.Err(); err != nil {
		return nil, 0, err
	}
	return jobs, dropped, nil
}

func readDerivations(path string) (*drv.IndexedGraph, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read derivations: %w", err)
	}
	g, err := drv.ParseShowDerivationIndexed(f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("read derivations %s: %w", path, err)
	}
	return g, nil
}

func readFail(path string) (map[string]bool, error) {
	fail := map[string]bool{}
	if path == "" {
		return fail, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read fail list: %w", err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		fail[l] = true
	}
	return fail, nil
}

// simulate builds what p releases instantly, first released first built,
// from what p.Start put in ev: the derivations in fail fail, the others
// succeed. It returns each of the jobs' outcomes and how many builds ran.
func simulate(p *dag.Plan, ev *dag.Events, jobs int, fail map[string]bool) ([]dag.Outcome, int) {
	status := make([]dag.Outcome, jobs)
	var queue []dag.Release
	builds := 0
	for {
		for _, oc := range ev.Outcomes {
			status[oc.Job] = oc
		}
		queue = append(queue, ev.Releases...)
		ev.Reset()
		if len(queue) == 0 {
			return status, builds
		}
		r := queue[0]
		queue = queue[1:]
		builds++
		if fail[r.Drv] {
			p.Fail(r.Drv, dag.BuildFailure, "build failed", ev)
		} else {
			p.Succeed(r.Drv, ev)
		}
	}
}
