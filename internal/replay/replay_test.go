package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func decodeLines(t *testing.T, out []byte) []Line {
	t.Helper()
	var lines []Line
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var l Line
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), sc.Text())
		lines = append(lines, l)
	}
	return lines
}

func storeDrv(hash, name string) string {
	return "/nix/store/" + strings.Repeat(hash, 32) + "-" + name + ".drv"
}

// The recorded evaluation in testdata mirrors examples/flake plus cached
// jobs, an alias, a second and an unsupported system.
func TestRunRecordedEvaluation(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := Run(t.Context(), Options{
		JobsPath:        "testdata/jobs.jsonl",
		DerivationsPath: "testdata/derivations.json",
		FailPath:        "testdata/fail.txt",
	}, &stdout, &stderr)
	require.NoError(t, err)
	want := []Line{
		{"chain1", storeDrv("a", "chain1"), "succeeded", ""},
		{"chain2", storeDrv("b", "chain2"), "succeeded", ""},
		{"chain3", storeDrv("c", "chain3"), "succeeded", ""},
		{"broken", storeDrv("d", "broken"), "failed", "build failed"},
		{"after-broken", storeDrv("e", "after-broken"), "skipped", "dependency broken failed"},
		{"nested.hello", storeDrv("f", "hello"), "succeeded", ""},
		{"aliases.hello", storeDrv("f", "hello"), "succeeded", ""},
		{"nested.wrapped", storeDrv("h", "wrapped"), "succeeded", ""},
		{"tool", storeDrv("i", "tool"), "cached", ""},
		// Cached, but a job it depends on (through a helper) failed.
		{"on-broken", storeDrv("j", "on-broken"), "skipped", "dependency broken failed"},
		{"arm.hello", storeDrv("l", "arm-hello"), "succeeded", ""},
		{"eval-error", "", "failed", "this job does not evaluate"},
	}
	require.Equal(t, want, decodeLines(t, stdout.Bytes()))
	summary := stderr.String()
	require.Contains(t, summary, "12 jobs (1 dropped: other systems), 14 derivations")
	require.Contains(t, summary, "7 builds")
	require.Contains(t, summary, "7 succeeded, 2 failed, 2 skipped, 1 cached")
	require.Contains(t, summary, "total ")
}

func TestRunOptions(t *testing.T) {
	t.Run("systems", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		require.NoError(t, Run(t.Context(), Options{JobsPath: "testdata/jobs.jsonl", DerivationsPath: "testdata/derivations.json",
			Systems: []string{"aarch64-linux"}}, &stdout, &stderr))
		require.Equal(t, []Line{
			{"arm.hello", storeDrv("l", "arm-hello"), "succeeded", ""},
			{"eval-error", "", "failed", "this job does not evaluate"},
		}, decodeLines(t, stdout.Bytes()))
	})
	t.Run("names as a real run", func(t *testing.T) {
		// The evaluator's reading of a line: a dot inside a name is quoted,
		// a cache status counts, eval errors are cleaned.
		dir := t.TempDir()
		drvPath := "/nix/store/" + strings.Repeat("x", 32) + "-y.drv"
		jobs := filepath.Join(dir, "jobs.jsonl")
		require.NoError(t, os.WriteFile(jobs, []byte(`{"attr":"a.b.c","attrPath":["a.b","c"],"drvPath":"`+drvPath+`","system":"x86_64-linux","cacheStatus":"local"}`+"\n"+
			`{"attr":"e","error":"\u001b[31;1merror:\u001b[0m boom"}`+"\n"), 0o644))
		drvs := filepath.Join(dir, "drvs.json")
		require.NoError(t, os.WriteFile(drvs, []byte(`{"`+drvPath+`":{"inputDrvs":{}}}`), 0o644))
		var stdout, stderr bytes.Buffer
		require.NoError(t, Run(t.Context(), Options{JobsPath: jobs, DerivationsPath: drvs}, &stdout, &stderr))
		require.Equal(t, []Line{{`"a.b".c`, drvPath, "cached", ""}, {"e", "", "failed", "boom"}}, decodeLines(t, stdout.Bytes()))
	})
	t.Run("nothing fails", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		require.NoError(t, Run(t.Context(), Options{JobsPath: "testdata/jobs.jsonl", DerivationsPath: "testdata/derivations.json"},
			&stdout, &stderr))
		for _, l := range decodeLines(t, stdout.Bytes()) {
			if l.Attr != "eval-error" {
				require.Contains(t, []string{"succeeded", "cached"}, l.Status, l.Attr)
			}
		}
	})
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	good := `{"attr":"a","drvPath":"/nix/store/a.drv","system":"x86_64-linux"}` + "\n"
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"garbage line", Options{JobsPath: write("g.jsonl", good+"\nwarning: not json\n")}, "line 3: not a JSON object"},
		{"broken json", Options{JobsPath: write("b.jsonl", good+`{"attr": "x",`+"\n")}, "line 2:"},
		{"no attr", Options{JobsPath: write("n.jsonl", `{"drvPath":"/nix/store/a.drv"}`+"\n")}, "line 1: no attr or attrPath"},
		{"no drv", Options{JobsPath: write("d.jsonl", `{"attr":"a"}`+"\n")}, "neither drvPath nor error"},
		{"missing jobs", Options{JobsPath: filepath.Join(dir, "nope")}, "read jobs"},
		{"bad derivations", Options{JobsPath: write("ok.jsonl", good), DerivationsPath: write("d.json", `{"x": [`)}, "read derivations"},
		{"missing fail list", Options{JobsPath: write("ok2.jsonl", good), FailPath: filepath.Join(dir, "nope")}, "read fail list"},
		{"no drv file in the store", Options{JobsPath: write("ok3.jsonl", good)}, "inputs of /nix/store/a.drv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Run(t.Context(), tt.o, &stdout, &stderr)
			require.ErrorContains(t, err, tt.want)
		})
	}
}
