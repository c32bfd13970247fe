package eval

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Record
		garbage    bool
	}{
		{
			name: "job",
			line: `{"attr":"nested.hello","attrPath":["nested","hello"],"drvPath":"/nix/store/aaa-hello.drv","name":"hello","outputs":{"out":"/nix/store/bbb-hello"},"system":"x86_64-linux"}`,
			want: Record{Attr: "nested.hello", AttrPath: []string{"nested", "hello"}, DrvPath: "/nix/store/aaa-hello.drv", Name: "hello",
				System: "x86_64-linux", Outputs: map[string]string{"out": "/nix/store/bbb-hello"}},
		},
		{
			name: "isCached",
			line: `{"attr":"a","attrPath":["a"],"drvPath":"/nix/store/a.drv","isCached":true,"outputs":{"out":"/nix/store/o","dev":null}}`,
			want: Record{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv", CacheKnown: true, Cached: true,
				Outputs: map[string]string{"out": "/nix/store/o", "dev": ""}},
		},
		{
			name: "cacheStatus local",
			line: `{"attr":"a","drvPath":"/nix/store/a.drv","cacheStatus":"local","isCached":false}`,
			want: Record{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv", CacheKnown: true, Cached: true},
		},
		{
			name: "cacheStatus notBuilt",
			line: `{"attr":"a","drvPath":"/nix/store/a.drv","cacheStatus":"notBuilt","neededBuilds":["/nix/store/a.drv"]}`,
			want: Record{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv", CacheKnown: true},
		},
		{
			name: "error",
			line: `{"attr":"eval-error","attrPath":["eval-error"],"error":"\u001b[31;1merror:\u001b[0m this job does not evaluate\n(use '--show-trace' to show detailed location information)"}`,
			want: Record{Attr: "eval-error", AttrPath: []string{"eval-error"}, Error: "this job does not evaluate"},
		},
		{
			name: "hostile attrPath wins over attr",
			line: `{"attr":"a.b.c","attrPath":["a.b","c\"${x}"],"drvPath":"/nix/store/x.drv"}`,
			want: Record{Attr: `"a.b"."c\"\${x}"`, AttrPath: []string{"a.b", `c"${x}`}, DrvPath: "/nix/store/x.drv"},
		},
		{
			name: "odd field types are ignored",
			line: `{"attr":"a","drvPath":"/nix/store/a.drv","system":7,"outputs":["out"],"isCached":"yes"}`,
			want: Record{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv"},
		},
		{
			name: "null error is no error",
			line: `{"attr":"a","drvPath":"/nix/store/a.drv","error":null}`,
			want: Record{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv"},
		},
		{name: "not json", line: `warning: something odd`, garbage: true},
		{name: "truncated", line: `{"attr":"a","drvPath":"/nix/st`, garbage: true},
		{name: "array", line: `["a"]`, garbage: true},
		{name: "no attr", line: `{"drvPath":"/nix/store/a.drv"}`, garbage: true},
		{name: "no drv nor error", line: `{"attr":"a","name":"a"}`, garbage: true},
		{name: "attr of wrong type", line: `{"attr":3,"drvPath":"/nix/store/a.drv"}`, garbage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLine([]byte(tc.line))
			if tc.garbage {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseLines(t *testing.T) {
	in := strings.Join([]string{
		`{"attr":"a","drvPath":"/nix/store/a.drv"}`,
		``,
		`garbage`,
		`{"attr":"b","error":"error: boom"}`,
		`{"attr":`,
		`{"attr":"c","drvPath":"/nix/store/c.drv"}`, // no final newline
	}, "\n")
	var seen []string
	recs, bad, err := ParseLines(strings.NewReader(in), func(line []byte, _ error) { seen = append(seen, string(line)) })
	require.NoError(t, err)
	require.Equal(t, 2, bad)
	require.Equal(t, []string{"garbage", `{"attr":`}, seen)
	require.Len(t, recs, 3)
	require.Equal(t, "a", recs[0].Attr)
	require.Equal(t, "boom", recs[1].Error)
	require.Equal(t, "c", recs[2].Attr)
}

// fakeEvalJobs writes an executable nix-eval-jobs that records its
// arguments and prints lines, then exits with code.
func fakeEvalJobs(t *testing.T, lines []string, code int) (bin, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "out.jsonl")
	require.NoError(t, os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	argsFile = filepath.Join(dir, "args")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '" + argsFile + "'\n" +
		"cat '" + out + "'\necho 'some progress' >&2\n"
	if code != 0 {
		script += "echo 'error: worker crashed' >&2\nexit 1\n"
	}
	bin = filepath.Join(dir, "nix-eval-jobs")
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	return bin, argsFile
}

func TestNixEvalJobsRun(t *testing.T) {
	lines := []string{
		`{"attr":"a","attrPath":["a"],"drvPath":"/nix/store/a.drv","system":"x86_64-linux","outputs":{"out":"/nix/store/a"},"isCached":false}`,
		`not json at all`,
		`{"attr":"b","attrPath":["b"],"error":"error: b is broken"}`,
	}
	for _, tc := range []struct {
		name string
		code int
	}{{"success", 0}, {"crash", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			bin, argsFile := fakeEvalJobs(t, lines, tc.code)
			e := &NixEvalJobs{Bin: bin, Nix: testNix(), Workers: 3, MaxMemoryMB: 1234, GCRootsDir: "/roots dir", Logger: discard()}
			res, err := e.Eval(t.Context(), "path:/some/flake#hydraJobs")
			if tc.code == 0 {
				require.NoError(t, err)
			} else {
				msg, ok := IsFailure(err)
				require.True(t, ok, "%v", err)
				require.Contains(t, msg, "worker crashed")
			}
			require.Equal(t, "nix-eval-jobs", res.Evaluator)
			require.Equal(t, 1, res.Garbage)
			require.Len(t, res.Records, 2, "records read before a crash are kept")
			require.Equal(t, "b is broken", res.Records[1].Error)
			args, err := os.ReadFile(argsFile)
			require.NoError(t, err)
			require.Contains(t, string(args), strings.Join([]string{
				"--workers", "3", "--max-memory-size", "1234", "--gc-roots-dir", "/roots dir",
				"--force-recurse", "--check-cache-status", "--flake", "path:/some/flake#hydraJobs",
			}, "\n"))
			require.Contains(t, string(args), "--option\nsubstituters\n\n")
		})
	}
}
