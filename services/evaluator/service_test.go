package evaluator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	"nixbus.dev/nixbus/pkg/nix"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testNix() *nix.Nix { return &nix.Nix{Options: map[string]string{"substituters": ""}} }

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Systems = []string{"x86_64-linux"}
	cfg.Builtin = true
	cfg.WorkDir = t.TempDir()
	cfg.AckWait = 5 * time.Second
	cfg.RetryDelay = 50 * time.Millisecond
	cfg.PublishWindow = 3
	// About one derivation or a few edges per chunk: the graph of the
	// example flake takes many chunks.
	cfg.graphChunkBytes = 100
	return cfg
}

// start runs an evaluator until the test ends.
func start(t *testing.T, js jetstream.JetStream, cfg Config, d Deps) *Service {
	t.Helper()
	d.JS = js
	d.Logger = discardLogger()
	if d.Nix == nil {
		d.Nix = testNix()
	}
	s, err := New(cfg, d)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return s
}

// exampleFlake copies examples/flake into a temp dir with a fresh salt, so
// its derivations are new to the store.
func exampleFlake(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "examples", "flake", "flake.nix"))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "flake.nix"), src, 0o644))
	salt := t.Name() + strconv.FormatInt(time.Now().UnixNano(), 10)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "salt.txt"), []byte(salt), 0o644))
	return dir
}

func publishEvent(t *testing.T, js jetstream.JetStream, ev *nixbuspb.ChangeEvent, msgID string) {
	t.Helper()
	msg, err := bus.NewMsg(bus.ChangeSubject(ev.Project), msgID, ev, nil)
	require.NoError(t, err)
	_, err = js.PublishMsg(t.Context(), msg)
	require.NoError(t, err)
}

// runMsgs is everything on a run's subjects.
type runMsgs struct {
	started []*nixbuspb.RunStarted
	jobs    map[string]*nixbuspb.Job
	jobMsgs int
	graph   []*nixbuspb.GraphChunk
	done    []*nixbuspb.EvalDone
	// order is the kind of each message, in stream order.
	order []string
}

// waitEvaluated waits for the run's EvalDone and the changes stream to be
// empty (every event handled), then reads the run.
func waitEvaluated(t *testing.T, js jetstream.JetStream, run string) runMsgs {
	t.Helper()
	ctx := t.Context()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		changes, err := js.Stream(ctx, bus.StreamChanges)
		require.NoError(c, err)
		info, err := changes.Info(ctx)
		require.NoError(c, err)
		require.Zero(c, info.State.Msgs, "events left to handle")
		runs, err := js.Stream(ctx, bus.StreamRuns)
		require.NoError(c, err)
		_, err = runs.GetLastMsgForSubject(ctx, bus.RunSubject(run, bus.RunEvalKind))
		assert.NoError(c, err, "no evaluated mark")
	}, 60*time.Second, 20*time.Millisecond)
	return readRun(t, js, run)
}

func readRun(t *testing.T, js jetstream.JetStream, run string) runMsgs {
	t.Helper()
	ctx := t.Context()
	runs, err := js.Stream(ctx, bus.StreamRuns)
	require.NoError(t, err)
	filter := "nixbus.run." + run + ".>"
	info, err := runs.Info(ctx, jetstream.WithSubjectFilter(filter))
	require.NoError(t, err)
	total := 0
	for _, n := range info.State.Subjects {
		total += int(n)
	}
	cons, err := js.OrderedConsumer(ctx, bus.StreamRuns, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	require.NoError(t, err)
	out := runMsgs{jobs: map[string]*nixbuspb.Job{}}
	for range total {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		_, kind, err := bus.ParseRunSubject(msg.Subject())
		require.NoError(t, err)
		out.order = append(out.order, kind)
		switch kind {
		case bus.RunStartedKind:
			var m nixbuspb.RunStarted
			require.NoError(t, bus.Decode(msg.Data(), &m))
			out.started = append(out.started, &m)
		case bus.RunJobKind:
			var m nixbuspb.Job
			require.NoError(t, bus.Decode(msg.Data(), &m))
			out.jobs[m.Attr] = &m
			out.jobMsgs++
		case bus.RunGraphKind:
			var m nixbuspb.GraphChunk
			require.NoError(t, bus.Decode(msg.Data(), &m))
			out.graph = append(out.graph, &m)
		case bus.RunEvalKind:
			var m nixbuspb.EvalDone
			require.NoError(t, bus.Decode(msg.Data(), &m))
			out.done = append(out.done, &m)
		}
	}
	return out
}

// requireOneRun checks the run has exactly one RunStarted first, one
// EvalDone last and one message per job.
func requireOneRun(t *testing.T, r runMsgs) {
	t.Helper()
	require.Len(t, r.started, 1)
	require.Len(t, r.done, 1)
	require.Equal(t, len(r.jobs), r.jobMsgs, "no job published twice")
	require.Equal(t, bus.RunStartedKind, r.order[0])
	require.Equal(t, bus.RunEvalKind, r.order[len(r.order)-1])
	require.EqualValues(t, len(r.jobs), r.done[0].JobCount)
	require.EqualValues(t, len(r.graph), r.done[0].GraphChunks, "graph chunks published once each")
	for k, c := range r.graph {
		require.Less(t, proto.Size(c), 1024, "chunk %d is bounded", k)
	}
}

// jobDeps reads from a run's graph chunks the jobs each job waits for: the
// job derivations reachable through derivations that are not jobs.
func jobDeps(r runMsgs) map[string][]string {
	drvs, edges := bus.AssembleGraph(r.graph)
	inputs := map[string][]string{}
	for k := 0; k+1 < len(edges); k += 2 {
		inputs[drvs[edges[k]]] = append(inputs[drvs[edges[k]]], drvs[edges[k+1]])
	}
	isJob := map[string]bool{}
	for _, j := range r.jobs {
		if j.DrvPath != "" {
			isJob[j.DrvPath] = true
		}
	}
	out := map[string][]string{}
	for attr, j := range r.jobs {
		seen := map[string]bool{}
		stack := slices.Clone(inputs[j.DrvPath])
		for len(stack) > 0 {
			d := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[d] {
				continue
			}
			seen[d] = true
			if isJob[d] {
				out[attr] = append(out[attr], d)
				continue
			}
			stack = append(stack, inputs[d]...)
		}
		slices.Sort(out[attr])
	}
	return out
}

// requireExampleJobs checks every job of examples/flake.
func requireExampleJobs(t *testing.T, r runMsgs, run string, cached ...string) {
	t.Helper()
	attrs := make([]string, 0, len(r.jobs))
	for a := range r.jobs {
		attrs = append(attrs, a)
	}
	slices.Sort(attrs)
	require.Equal(t, []string{"after-broken", "broken", "chain1", "chain2", "chain3", "eval-error", "nested.hello", "nested.wrapped"}, attrs)
	drvOf := func(attr string) string { return r.jobs[attr].DrvPath }
	wantDeps := map[string][]string{
		"chain2":         {drvOf("chain1")},
		"chain3":         {drvOf("chain2")},
		"nested.wrapped": {drvOf("chain1")},
		"after-broken":   {drvOf("broken")},
	}
	deps := jobDeps(r)
	for attr, j := range r.jobs {
		require.Equal(t, run, j.RunId)
		require.Empty(t, j.DependsOn, "deprecated: the graph chunks say it")
		if attr == "eval-error" {
			require.Equal(t, "this job does not evaluate", j.EvalError)
			require.Empty(t, j.DrvPath)
			continue
		}
		require.Empty(t, j.EvalError, attr)
		require.Equal(t, "x86_64-linux", j.System, attr)
		require.Equal(t, j.AttrPath[len(j.AttrPath)-1], j.Name, attr)
		require.FileExists(t, j.DrvPath, attr)
		require.Contains(t, j.Outputs, "out", attr)
		require.Equal(t, slices.Contains(cached, attr), j.Cached, "cached %s", attr)
		require.Equal(t, wantDeps[attr], deps[attr], attr)
	}
	require.Equal(t, []string{"nested", "wrapped"}, r.jobs["nested.wrapped"].AttrPath)
}

func TestEvaluateLocalFlake(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	cfg := testConfig(t)
	start(t, js, cfg, Deps{})

	dir := exampleFlake(t)
	ev := &nixbuspb.ChangeEvent{EventId: "manual-" + t.Name(), Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: "example", LocalPath: dir}
	publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))
	run := bus.RunID(ev.EventId)
	r := waitEvaluated(t, js, run)
	requireOneRun(t, r)
	require.Equal(t, dir, r.started[0].Change.LocalPath)
	require.Equal(t, ev.EventId, r.started[0].Change.EventId)
	require.Empty(t, r.done[0].Error)
	require.Zero(t, r.done[0].DroppedJobs)
	requireExampleJobs(t, r, run)
	entries, err := os.ReadDir(cfg.WorkDir)
	require.NoError(t, err)
	require.Empty(t, entries, "run dirs are removed")

	t.Run("redelivery publishes nothing twice", func(t *testing.T) {
		// The same event again (as a redelivery would hand it over).
		publishEvent(t, js, ev, "again-"+ev.EventId)
		again := waitEvaluated(t, js, run)
		requireOneRun(t, again)
		require.Equal(t, len(r.order), len(again.order))
	})
}

func TestEvaluateAfterCrashMidRun(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	dir := exampleFlake(t)
	ev := &nixbuspb.ChangeEvent{EventId: "crash-" + t.Name(), Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: "example", LocalPath: dir}
	run := bus.RunID(ev.EventId)

	// An evaluator that died after publishing the start and one job.
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	pub := bus.NewPublisher(js, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, pub.Publish(t.Context(), bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run),
		&nixbuspb.RunStarted{RunId: run, Change: ev}, nil))
	first := chain1Drv(t, dir)
	require.NoError(t, pub.Publish(t.Context(), bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, "chain1"),
		&nixbuspb.Job{RunId: run, Attr: "chain1", DrvPath: first}, nil))

	start(t, js, testConfig(t), Deps{})
	publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))
	r := waitEvaluated(t, js, run)
	requireOneRun(t, r)
	require.Len(t, r.jobs, 8)
}

// chain1Drv is chain1's derivation in dir, as nix gives it.
func chain1Drv(t *testing.T, dir string) string {
	t.Helper()
	out, err := testNix().Output(t.Context(), []string{"eval"}, "--raw", "path:"+dir+"#hydraJobs.chain1.drvPath")
	require.NoError(t, err)
	return string(out)
}

// fetcherFunc adapts a function to Fetcher.
type fetcherFunc func(ctx context.Context, ev *nixbuspb.ChangeEvent, workDir string) (string, error)

func (f fetcherFunc) Fetch(ctx context.Context, ev *nixbuspb.ChangeEvent, workDir string) (string, error) {
	return f(ctx, ev, workDir)
}

func TestEvaluateFetchedChange(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	cfg := testConfig(t)
	src := exampleFlake(t)
	var workDirs []string
	fetch := fetcherFunc(func(_ context.Context, ev *nixbuspb.ChangeEvent, workDir string) (string, error) {
		workDirs = append(workDirs, workDir)
		entries, err := os.ReadDir(workDir)
		if err != nil || len(entries) != 0 {
			return "", errors.New("work dir is not an empty directory")
		}
		switch ev.Ref {
		case "refs/changes/01/1/1":
			checkout := filepath.Join(workDir, "repo")
			if err := os.Mkdir(checkout, 0o755); err != nil {
				return "", err
			}
			for _, f := range []string{"flake.nix", "salt.txt"} {
				data, err := os.ReadFile(filepath.Join(src, f))
				if err != nil {
					return "", err
				}
				if err := os.WriteFile(filepath.Join(checkout, f), data, 0o444); err != nil {
					return "", err
				}
			}
			return checkout, nil
		default:
			return "", errors.New("ref not found")
		}
	})
	start(t, js, cfg, Deps{Fetcher: fetch})

	ok := &nixbuspb.ChangeEvent{EventId: "gerrit-1-1", Kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, Project: "p",
		Change: 1, Patchset: 1, Ref: "refs/changes/01/1/1", RepoUrl: "ssh://gerrit/p"}
	publishEvent(t, js, ok, bus.MsgIDChange(ok.EventId))
	run := bus.RunID(ok.EventId)
	r := waitEvaluated(t, js, run)
	requireOneRun(t, r)
	require.Empty(t, r.done[0].Error)
	requireExampleJobs(t, r, run)

	bad := &nixbuspb.ChangeEvent{EventId: "gerrit-1-2", Kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, Project: "p",
		Change: 1, Patchset: 2, Ref: "refs/changes/01/1/2", RepoUrl: "ssh://gerrit/p"}
	publishEvent(t, js, bad, bus.MsgIDChange(bad.EventId))
	r = waitEvaluated(t, js, bus.RunID(bad.EventId))
	requireOneRun(t, r)
	require.Empty(t, r.jobs)
	require.Contains(t, r.done[0].Error, "ref not found")
	require.Contains(t, r.done[0].Error, "refs/changes/01/1/2")

	require.Len(t, workDirs, 2)
	for _, d := range workDirs {
		require.NoDirExists(t, d, "checkouts are removed, read-only files too")
	}
}

func TestEvaluateFailures(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	start(t, js, testConfig(t), Deps{})
	broken := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(broken, "flake.nix"), []byte(`{ outputs = { self }: { hydraJobs = ; }; }`), 0o644))
	for _, tc := range []struct {
		name string
		ev   *nixbuspb.ChangeEvent
		want string
	}{
		{"no fetcher", &nixbuspb.ChangeEvent{Project: "p", Ref: "refs/heads/main", RepoUrl: "ssh://gerrit/p"}, "no fetcher"},
		{"local path missing", &nixbuspb.ChangeEvent{Project: "p", LocalPath: filepath.Join(broken, "nope")}, "is not a directory"},
		{"flake does not parse", &nixbuspb.ChangeEvent{Project: "p", LocalPath: broken}, "syntax error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ev.EventId = t.Name()
			publishEvent(t, js, tc.ev, bus.MsgIDChange(tc.ev.EventId))
			r := waitEvaluated(t, js, bus.RunID(tc.ev.EventId))
			requireOneRun(t, r)
			require.Empty(t, r.jobs)
			require.Contains(t, r.done[0].Error, tc.want)
		})
	}
}

// TestTwoEvaluatorsShareChanges runs two evaluator processes with one slot
// each: two changes are evaluated at the same time, one by each, and an
// evaluation far longer than AckWait is never handed to the other.
func TestTwoEvaluatorsShareChanges(t *testing.T) {
	ns := natstest.Start(t)
	src := exampleFlake(t)
	var mu sync.Mutex
	calls := map[string]int{}
	arrived := make(chan string, 4)
	release := make(chan struct{})
	fetch := func(who string) Fetcher {
		return fetcherFunc(func(ctx context.Context, ev *nixbuspb.ChangeEvent, _ string) (string, error) {
			mu.Lock()
			calls[ev.EventId]++
			mu.Unlock()
			arrived <- who
			select {
			case <-release:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			return src, nil
		})
	}
	for _, who := range []string{"a", "b"} {
		_, js := ns.Connect(t)
		cfg := testConfig(t)
		cfg.AckWait = 600 * time.Millisecond
		start(t, js, cfg, Deps{Fetcher: fetch(who)})
	}
	_, js := ns.Connect(t)
	for _, id := range []string{"share-1", "share-2"} {
		publishEvent(t, js, &nixbuspb.ChangeEvent{EventId: id, Project: "p", Ref: "refs/heads/main"}, bus.MsgIDChange(id))
	}
	var who []string
	for range 2 {
		select {
		case w := <-arrived:
			who = append(who, w)
		case <-time.After(30 * time.Second):
			t.Fatal("both changes are not being evaluated at once")
		}
	}
	slices.Sort(who)
	require.Equal(t, []string{"a", "b"}, who)
	// Held for several AckWaits: heartbeats keep the changes where they are.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case w := <-arrived:
			t.Fatalf("a change was handed over to %s while being evaluated", w)
		case <-time.After(100 * time.Millisecond):
		}
	}
	close(release)
	for _, id := range []string{"share-1", "share-2"} {
		r := waitEvaluated(t, js, bus.RunID(id))
		requireOneRun(t, r)
		require.Len(t, r.jobs, 8)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]int{"share-1": 1, "share-2": 1}, calls)
}

// TestHostileNamesOnTheBus checks names that look alike once joined stay
// two jobs, and that any name survives the trip.
func TestHostileNamesOnTheBus(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	start(t, js, testConfig(t), Deps{})
	dir := t.TempDir()
	src := `{
  outputs = { self }:
    let job = name: builtins.derivation {
      inherit name; salt = builtins.readFile ./salt.txt; system = "x86_64-linux";
      builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; PATH = "/usr/bin:/bin";
    }; in {
      hydraJobs = { "a.b" = job "one"; a = { b = job "two"; }; "new\nline \${x} \"q\" ../" = job "three"; };
    };
}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(src), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "salt.txt"), []byte(t.Name()+time.Now().String()), 0o644))
	ev := &nixbuspb.ChangeEvent{EventId: t.Name(), Project: "p", LocalPath: dir}
	publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))
	r := waitEvaluated(t, js, bus.RunID(ev.EventId))
	requireOneRun(t, r)
	require.Len(t, r.jobs, 3)
	require.Equal(t, []string{"a.b"}, r.jobs[`"a.b"`].AttrPath)
	require.Equal(t, []string{"a", "b"}, r.jobs["a.b"].AttrPath)
	weird := r.jobs[`"new\nline \${x} \"q\" ../"`]
	require.NotNil(t, weird)
	require.Equal(t, []string{"new\nline ${x} \"q\" ../"}, weird.AttrPath)
	require.Equal(t, "three", weird.Name)
}
