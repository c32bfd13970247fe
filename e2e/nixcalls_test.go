package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/natstest"
)

// countingNix puts first on PATH a nix that writes its subcommand to a log
// and runs the real nix, and a nix-daemon that logs "daemon"; the returned
// func counts the calls so far by subcommand ("build", "store sign",
// "--version", "daemon", ...).
func countingNix(t *testing.T) func() map[string]int {
	t.Helper()
	real, err := exec.LookPath("nix")
	require.NoError(t, err)
	bin := t.TempDir()
	log := filepath.Join(bin, "calls")
	script := "#!/bin/sh\n" +
		"case \"$1\" in store|key|flake|derivation) printf '%s %s\\n' \"$1\" \"$2\" ;; *) printf '%s\\n' \"$1\" ;; esac >> '" + log + "'\n" +
		"exec '" + real + "' \"$@\"\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "nix"), []byte(script), 0o755))
	realDaemon, err := exec.LookPath("nix-daemon")
	require.NoError(t, err)
	daemon := "#!/bin/sh\necho daemon >> '" + log + "'\nexec '" + realDaemon + "' \"$@\"\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "nix-daemon"), []byte(daemon), 0o755))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return func() map[string]int {
		data, err := os.ReadFile(log)
		require.NoError(t, err)
		calls := map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			calls[l]++
		}
		return calls
	}
}

// TestNixCallsPerJob counts the nix processes a run of the example flake
// spawns: one nix repl evaluates every job; the builder (concurrency 1)
// reads nix's settings once and builds everything over one nix-daemon
// connection, with no nix build process at all; and uploads take one nix
// copy per batch of builds (the cache signs what is copied into it: no
// nix store sign). Nothing asks nix what nixbus already knows (no
// path-info, no show-derivation).
func TestNixCallsPerJob(t *testing.T) {
	calls := countingNix(t)
	srv := natstest.Start(t)
	state := t.TempDir()
	startInstances(t, srv.URL, state, nil)
	res, js := follow(t, srv, saltedExample(t))
	builds := len(buildResults(t, js, res.RunID))
	require.Equal(t, 6, builds)
	require.Len(t, res.Uploads, 5)

	got := calls()
	t.Logf("nix calls for %d jobs, %d builds: %v", len(res.Outcomes), builds, got)
	require.Zero(t, got["build"], "no nix build process")
	require.Equal(t, 1, got["daemon"], "one nix-daemon connection for all builds")
	require.Equal(t, 1, got["show-config"], "nix's settings are read once")
	require.Equal(t, 1, got["repl"], "one evaluation")
	require.LessOrEqual(t, got["--version"], 1, "the version is asked once")
	require.GreaterOrEqual(t, got["copy"], 1)
	require.LessOrEqual(t, got["copy"], len(res.Uploads), "at most one nix copy per upload")
	require.Zero(t, got["store sign"], "the cache signs what it is given")
	others := 0
	for sub, n := range got {
		switch sub {
		case "daemon", "show-config", "repl", "--version", "copy":
		default:
			others += n
		}
	}
	require.Zero(t, others, "no other nix process: %v", got)
}
