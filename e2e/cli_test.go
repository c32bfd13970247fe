package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// buildNixbus compiles cmd/nixbus once per test binary run.
func buildNixbus(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nixbus")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../cmd/nixbus")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

// TestSeparateProcesses runs each service as its own nixbus process against
// one NATS server, as an operator scaling past one machine would, and stops
// them with SIGTERM: each must exit 0.
func TestSeparateProcesses(t *testing.T) {
	bin := buildNixbus(t)
	srv := natstest.Start(t)
	state := t.TempDir()
	var procs []*proc
	for _, name := range app.Names() {
		procs = append(procs, startProc(t, bin, name, procArgs(srv.URL, state, "--log.level", "warn")...))
	}
	runExample(t, srv, state)
	for _, p := range procs {
		p.stop()
	}
}

// mainOut runs app.Main with stdout and stderr in files and returns the
// exit code and what it printed.
func mainOut(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	require.NoError(t, err)
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	require.NoError(t, err)
	code := app.Main(t.Context(), args, stdout, stderr)
	require.NoError(t, stdout.Close())
	require.NoError(t, stderr.Close())
	o, _ := os.ReadFile(stdout.Name())
	e, _ := os.ReadFile(stderr.Name())
	return code, string(o), string(e)
}

func TestRunCommandExitCodes(t *testing.T) {
	ok := flake(t, map[string]string{"one": "echo one > $out", "two": "cat ${one} > $out"})
	code, out, errOut := mainOut(t, "run", "--state-dir", t.TempDir(), "--nix.option", "substituters=", ok)
	require.Equal(t, 0, code, out+errOut)
	require.Contains(t, out, "verdict: SUCCESS (2 jobs)")
	require.Contains(t, out, "review: Verified +1")

	bad := flake(t, map[string]string{"no": "exit 3"})
	code, out, errOut = mainOut(t, "run", "--state-dir", t.TempDir(), "--nix.option", "substituters=", bad)
	require.Equal(t, 1, code, out+errOut)
	require.Contains(t, out, " - no: build failed: ")
	require.Contains(t, out, "last lines of the log of no:")

	code, _, errOut = mainOut(t, "run", "--state-dir", t.TempDir(), t.TempDir())
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "no flake.nix")
}

func TestTriggerCommand(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	code, out, errOut := mainOut(t, "trigger", "--nats", srv.URL, "--project", "lix", "--change", "12", "--patchset", "3",
		"--repo-url", "ssh://nixbus@gerrit.example:29418/lix")
	require.Equal(t, 0, code, out+errOut)
	require.Contains(t, out, "triggered refs/changes/12/12/3")

	stream, err := js.Stream(t.Context(), bus.StreamChanges)
	require.NoError(t, err)
	msg, err := stream.GetLastMsgForSubject(t.Context(), bus.ChangeSubject("lix"))
	require.NoError(t, err)
	var ev nixbuspb.ChangeEvent
	require.NoError(t, bus.Decode(msg.Data, &ev))
	require.Equal(t, "lix", ev.GetProject())
	require.EqualValues(t, 12, ev.GetChange())
	require.EqualValues(t, 3, ev.GetPatchset())
	require.Equal(t, "refs/changes/12/12/3", ev.GetRef())

	code, _, errOut = mainOut(t, "trigger", "--project", "lix", "--change", "1", "--patchset", "1")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--nats.url is required")
}

func TestPlanCommand(t *testing.T) {
	td := filepath.Join("..", "internal", "replay", "testdata")
	code, out, errOut := mainOut(t, "plan", "--jobs", filepath.Join(td, "jobs.jsonl"),
		"--derivations", filepath.Join(td, "derivations.json"), "--fail", filepath.Join(td, "fail.txt"))
	require.Equal(t, 0, code, errOut)
	statuses := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var line struct{ Attr, Status, Reason string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
		statuses[line.Attr] = line.Status
	}
	require.Equal(t, "succeeded", statuses["chain3"])
	require.Equal(t, "failed", statuses["broken"])
	require.NotEmpty(t, errOut, "a timing summary on stderr")

	code, _, errOut = mainOut(t, "plan")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--jobs and --derivations are required")
}
