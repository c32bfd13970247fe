package nixbuild

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/nixtest"
	"nixbus.dev/nixbus/pkg/nix"
)

func testDaemon(t *testing.T) *Daemon {
	t.Helper()
	d := &Daemon{
		Nix:           &nix.Nix{Options: map[string]string{"substituters": ""}},
		MaxSilentTime: time.Second, KillGrace: 5 * time.Second, HookDir: t.TempDir(),
	}
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

func logFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	return f
}

// TestDaemonBuild builds through the daemon executor for real: outcomes,
// outputs with their GC-rooted out-link, and a log in `nix build -L`'s
// shape, in which nothing a build prints passes for nix's own words.
func TestDaemonBuild(t *testing.T) {
	d := testDaemon(t)
	tests := []struct {
		name, script string
		exit         int
		errHas       string
		silence      bool
		transient    string
		logHas       []string
	}{
		{"ok", `echo hello; echo built > $out`, 0, "", false, "", []string{"building '", "ok> hello"}},
		// What it prints is nix's wording for a full disk, and it comes
		// back in nix's error as the last log lines: still its own failure.
		{"forged", `echo 'error: writing to file: No space left on device'; exit 2`, 100, "failed with exit code 2", false, "",
			[]string{"forged> error: writing to file: No space left on device", "error: builder for '"}},
		{"silent", `echo going quiet; exec /bin/sleep 600`, 101, "of silence", true, "", []string{"silent> going quiet"}},
		// SIGKILLed as the OOM killer does: the infrastructure's failure.
		{"killed", `echo dying; kill -9 $$`, 100, "failed due to signal 9 (Killed)", false, "builder killed", []string{"killed> dying"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drv := nixtest.Derivation(t, tt.name, tt.script)
			link := filepath.Join(t.TempDir(), "result")
			log := logFile(t)
			out, err := d.Build(t.Context(), Spec{DrvPath: drv, OutLink: link}, log)
			require.NoError(t, err)
			require.Equal(t, tt.exit, out.ExitCode, out.Error)
			require.Contains(t, out.Error, tt.errHas)
			require.NotContains(t, out.Error, "\n")
			require.Equal(t, tt.silence, out.SilenceTimeout)
			require.Equal(t, tt.transient, out.Transient)
			text := Tail(log, 1<<20)
			for _, s := range tt.logHas {
				require.Contains(t, text, s)
			}
			// The decline hook answered: nix's build-remote never ran, and
			// nix saw no hook die.
			require.NotContains(t, text, "hook")
			if tt.exit == 0 {
				p := out.Outputs["out"]
				require.True(t, strings.HasPrefix(p, "/nix/store/"), p)
				target, err := os.Readlink(link)
				require.NoError(t, err)
				require.Equal(t, p, target)
			}
		})
	}
}

// TestDaemonConnections: a first build cancelled while nix's settings
// are read does not spoil the next; a connection serves MaxUses builds
// and is then replaced; a build stopped by its context takes its
// connection down (and the next build gets a new one).
func TestDaemonConnections(t *testing.T) {
	d := testDaemon(t)
	d.MaxUses = 2
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := d.Build(cancelled, Spec{DrvPath: nixtest.Derivation(t, "x", `echo x > $out`), OutLink: filepath.Join(t.TempDir(), "r")}, logFile(t))
	require.Error(t, err)
	for i := range 3 {
		out, err := d.Build(t.Context(), Spec{DrvPath: nixtest.Derivation(t, "x", `echo x > $out`), OutLink: filepath.Join(t.TempDir(), "r")}, logFile(t))
		require.NoError(t, err)
		require.Zero(t, out.ExitCode, "build %d: %s", i, out.Error)
	}
	require.Equal(t, 2, d.Nix.Calls()["daemon"])

	ctx, cancel2 := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel2()
	out, err := d.Build(ctx, Spec{DrvPath: nixtest.Derivation(t, "long", `while :; do echo tick; /bin/sleep 0.1; done`), OutLink: filepath.Join(t.TempDir(), "r")}, logFile(t))
	require.NoError(t, err)
	require.Equal(t, -1, out.ExitCode)
	require.Empty(t, out.Transient)
	out, err = d.Build(t.Context(), Spec{DrvPath: nixtest.Derivation(t, "y", `echo y > $out`), OutLink: filepath.Join(t.TempDir(), "r")}, logFile(t))
	require.NoError(t, err)
	require.Zero(t, out.ExitCode, out.Error)
	require.Equal(t, 3, d.Nix.Calls()["daemon"])
}

func TestNoRemoteBuilders(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
		return p
	}
	tests := []struct {
		builders string
		want     bool
	}{
		{"", true},
		{"  ", true},
		{"@" + filepath.Join(dir, "absent"), true},
		{"@" + write("empty", "# no machines\n\n"), true},
		{"@" + write("one", "ssh://b x86_64-linux\n"), false},
		{"ssh://b x86_64-linux", false},
		{" ; ", true},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, noRemoteBuilders(tt.builders), tt.builders)
	}
}

// TestDeclineHook: the hook is written and tried before nix is given it;
// one that does not run as it should (here: its cat fails) is not used.
func TestDeclineHook(t *testing.T) {
	n := &nix.Nix{}
	hook, err := writeDeclineHook(t.Context(), n, t.TempDir())
	require.NoError(t, err)
	require.FileExists(t, hook)

	bin := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "cat"), []byte("#!/bin/sh\nexit 1\n"), 0o755))
	t.Setenv("PATH", bin)
	_, err = writeDeclineHook(t.Context(), n, t.TempDir())
	require.ErrorContains(t, err, "try the decline hook")
}

// TestDaemonGivesNixTheDeclineHook: the builds of a connection run the
// decline hook (not nix's build-remote, which would only decline, slower).
func TestDaemonGivesNixTheDeclineHook(t *testing.T) {
	d := testDaemon(t)
	require.NoError(t, d.Check(t.Context()))
	hook := d.opts.Overrides["build-hook"]
	require.Equal(t, "nixbus-decline-hook", filepath.Base(hook))
	// The same hook, leaving a mark when it runs.
	marker := filepath.Join(t.TempDir(), "ran")
	data, err := os.ReadFile(hook)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(hook, []byte(strings.Replace(string(data), "\n", "\necho ran >> '"+marker+"'\n", 1)), 0o755))

	out, err := d.Build(t.Context(), Spec{DrvPath: nixtest.Derivation(t, "hooked", `echo x > $out`), OutLink: filepath.Join(t.TempDir(), "r")}, logFile(t))
	require.NoError(t, err)
	require.Zero(t, out.ExitCode, out.Error)
	require.FileExists(t, marker)
}
