package eval

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

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
