package eval

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const jobFn = `
      salt = builtins.readFile ./salt.txt;
      job = name: builtins.derivation {
        inherit name salt;
        system = "x86_64-linux";
        builder = "/bin/sh";
        args = [ "-c" "echo ok > $out" ];
      };`

// An endless genericClosure hits --evaluator.max-memory-size and the
// evaluation fails saying so, instead of growing until the timeout.
func TestBuiltinMemoryLimit(t *testing.T) {
	dir := writeFlake(t, `{
  outputs = { self }: let `+jobFn+` in {
    hydraJobs = {
      a = job "a";
      endless = builtins.genericClosure { startSet = [ { key = 0; } ]; operator = x: [ { key = x.key + 1; } ]; };
    };
  };
}`)
	n := testNix()
	n.MaxMemoryMB = 300
	b := &Builtin{Nix: n, Logger: discard()}
	res, err := b.Eval(t.Context(), "path:"+dir+"#hydraJobs")
	msg, failed := IsFailure(err)
	if !failed {
		// The repl may survive nix's out-of-memory error: then it is the
		// attribute's error.
		require.NoError(t, err)
		msg = byAttr(res.Records)["endless"].Error
	}
	require.Contains(t, msg, "out of memory")
	require.Contains(t, byAttr(res.Records), "a", "the job evaluated before is kept")
}

// 20 MiB of builtins.trace lines (and a trace line of 4 MiB) cost the evaluator
// a bounded amount of memory, and the job's error is still nix's own.
func TestBuiltinHugeTraceStaysBounded(t *testing.T) {
	dir := writeFlake(t, `{
  outputs = { self }: let `+jobFn+`
      lines = builtins.concatStringsSep "\n" (builtins.genList (i: "a trace line of about sixty-four bytes, number ${toString i} ....") 300000);
      long = builtins.concatStringsSep "" (builtins.genList (i: "0123456789abcdef") 262144);
    in {
    hydraJobs = {
      a = builtins.trace lines (job "a");
      b = builtins.trace long (throw "b fails after its trace");
    };
  };
}`)
	b := &Builtin{Nix: testNix(), Logger: discard()}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := b.Eval(t.Context(), "path:"+dir+"#hydraJobs")
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	got := byAttr(res.Records)
	require.NotEmpty(t, got["a"].DrvPath)
	require.Equal(t, "b fails after its trace", got["b"].Error)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8<<20), "allocated while reading 24 MiB of traces")
}

// On a timeout the jobs evaluated before it are returned with ctx's error,
// and no nix is left running.
func TestBuiltinTimeoutKeepsJobs(t *testing.T) {
	dir := writeFlake(t, `{
  outputs = { self }: let `+jobFn+` in {
    hydraJobs = {
      a = job "a";
      b = job "b";
      slow = builtins.foldl' (x: y: x + y) 0 (builtins.genList (i: i) 1000000000);
    };
  };
}`)
	b := &Builtin{Nix: testNix(), Logger: discard()}
	var got []Record
	b.Emit = func(r Record) { got = append(got, r) }
	ctx, cancel := context.WithCancel(t.Context())
	emit := b.Emit
	b.Emit = func(r Record) {
		emit(r)
		if r.Attr == "b" {
			// b is done: slow comes next, cut it short.
			time.AfterFunc(200*time.Millisecond, cancel)
		}
	}
	_, err := b.Eval(ctx, "path:"+dir+"#hydraJobs")
	require.ErrorIs(t, err, context.Canceled)
	require.Len(t, got, 2)
	require.Equal(t, "a", got[0].Attr)
	require.Equal(t, "b", got[1].Attr)
	require.NotEmpty(t, got[1].DrvPath)
}

func TestReadLinesCutsLongLines(t *testing.T) {
	in := "short\n" + strings.Repeat("x", 100) + "\nlast"
	var lines []string
	var cuts []bool
	readLines(strings.NewReader(in), 10, func(l []byte, cut bool) {
		lines = append(lines, string(l))
		cuts = append(cuts, cut)
	})
	require.Equal(t, []string{"short", "xxxxxxxxxx", "last"}, lines)
	require.Equal(t, []bool{false, true, false}, cuts)
}

// A set larger than a chunk is evaluated chunkSize children per
// expression; a child tryEval catches, and a chunk an uncatchable error
// stops, are asked again alone: every attribute gets its own record and
// nix's own message.
func TestBuiltinChunks(t *testing.T) {
	dir := writeFlake(t, `{
  outputs = { self }: let `+jobFn+`
      n = i: if i < 10 then "j0${toString i}" else "j${toString i}";
      jobs = builtins.listToAttrs (builtins.genList (i: { name = n i; value = job (n i); }) 80);
    in {
    hydraJobs = jobs // {
      j05 = throw "j05 throws";
      j41 = abort "j41 aborts";
      j42 = ({ }).missing;
      j50 = { nested = job "nested"; bad = throw "nested throws"; };
      j60 = null;
    };
  };
}`)
	b := &Builtin{Nix: testNix(), Logger: discard()}
	res, err := b.Eval(t.Context(), "path:"+dir+"#hydraJobs")
	require.NoError(t, err)
	got := byAttr(res.Records)
	require.Len(t, res.Records, 80-2+2, "80 jobs, j50 two, j60 none")
	require.Len(t, got, len(res.Records), "no attribute twice")
	for attr, msg := range map[string]string{
		"j05": "j05 throws", "j41": "j41 aborts", "j42": "attribute 'missing' missing", "j50.bad": "nested throws",
	} {
		require.Contains(t, got[attr].Error, msg, attr)
		require.Empty(t, got[attr].DrvPath, attr)
	}
	for _, attr := range []string{"j00", "j04", "j06", "j40", "j43", "j79", "j50.nested"} {
		require.Empty(t, got[attr].Error, attr)
		require.NotEmpty(t, got[attr].DrvPath, attr)
	}
}
