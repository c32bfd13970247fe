package evaluator

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func writeFlake(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(src), 0o644))
	salt := t.Name() + strconv.FormatInt(time.Now().UnixNano(), 10)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "salt.txt"), []byte(salt), 0o644))
	return dir
}

func evaluateFlake(t *testing.T, cfg Config, dir string) runMsgs {
	t.Helper()
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	start(t, js, cfg, Deps{})
	ev := &nixbuspb.ChangeEvent{EventId: "manual-" + t.Name(), Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: "p", LocalPath: dir}
	publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))
	r := waitEvaluated(t, js, bus.RunID(ev.EventId))
	requireOneRun(t, r)
	return r
}

// An evaluation that times out publishes the jobs it evaluated and reports
// the timeout as the run's eval error: never "0 jobs".
func TestEvalTimeoutKeepsEvaluatedJobs(t *testing.T) {
	dir := writeFlake(t, `{
  outputs = { self }:
    let
      salt = builtins.readFile ./salt.txt;
      job = name: builtins.derivation { inherit name salt; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo ok > $out" ]; };
      # Hours of evaluation in little memory.
      sum = n: builtins.foldl' (a: i: a + i) 0 (builtins.genList (i: i) n);
      slow = builtins.foldl' (a: i: a + sum 100000) 0 (builtins.genList (i: i) 100000);
    in {
      hydraJobs = { a = job "a"; b = job "b"; z = builtins.seq slow (job "z"); };
    };
}`)
	cfg := testConfig(t)
	cfg.EvalTimeout = 10 * time.Second
	r := evaluateFlake(t, cfg, dir)
	require.Contains(t, r.done[0].Error, "evaluation timed out after 10s")
	require.Len(t, r.jobs, 2, "a and b are published")
	require.NotEmpty(t, r.jobs["a"].DrvPath)
	require.NotEmpty(t, r.jobs["b"].DrvPath)
}

// A whole-evaluation error far over the bus's message limit is cut, so the
// run gets its EvalDone (and a verdict) instead of being retried forever.
func TestHugeEvalErrorIsCut(t *testing.T) {
	dir := writeFlake(t, `{
  outputs = { self }: {
    hydraJobs = throw ("huge error " + builtins.concatStringsSep "" (builtins.genList (i: "0123456789abcdef") 131072));
  };
}`)
	r := evaluateFlake(t, testConfig(t), dir)
	require.Contains(t, r.done[0].Error, "huge error 0123456789abcdef")
	require.LessOrEqual(t, len(r.done[0].Error), maxErrorBytes+len("…"))
	require.Empty(t, r.jobs)
}
