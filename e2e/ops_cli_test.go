package e2e

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/natstest"
)

// TestOperatorCommands triggers a run with one failing job and follows it
// with trigger --watch, then reads it back with watch, status and logs, each
// through the --nats.* flags against a running nixbus.
func TestOperatorCommands(t *testing.T) {
	srv := natstest.Start(t)
	state := t.TempDir()
	startInstances(t, srv.URL, state, nil)
	dir := flake(t, map[string]string{"good": "echo good > $out", "bad": "echo oops-in-the-log; exit 3"})

	code, out, errOut := mainOut(t, "trigger", "--nats.url", srv.URL, "--local-path", dir, "--watch")
	require.Equal(t, 1, code, out+errOut)
	runID := regexp.MustCompile(`(?m)^run (r[0-9a-f]+)$`).FindStringSubmatch(out)
	require.NotNil(t, runID, out)
	t.Log(out)
	require.Contains(t, out, "x86_64-linux [####################] 0 queued, 0 building, 1 done, 1 failed")
	require.Contains(t, out, "verdict: FAILURE (2 jobs)")

	code, out, errOut = mainOut(t, "watch", "--nats.url", srv.URL, runID[1])
	require.Equal(t, 1, code, out+errOut)
	require.Contains(t, out, "1 done, 1 failed")
	require.Regexp(t, `FAILED +bad: `, out)
	require.Contains(t, out, "verdict: FAILURE (2 jobs)")

	code, out, errOut = mainOut(t, "status", "--nats.url", srv.URL)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, runID[1]+`  \S+ \S+  FAILURE .* 2 jobs: 1 built, 0 cached, 1 failed, 0 skipped`, out)

	code, out, errOut = mainOut(t, "status", "--nats.url", srv.URL, runID[1])
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "run "+runID[1]+": FAILURE")
	require.Regexp(t, `failed jobs:\n +FAILED +bad: `, out)
	require.NotContains(t, out, "good")
	t.Log(out)

	for _, args := range [][]string{{runID[1], "bad"}, {"-f", runID[1], "bad"}, {runID[1], "bad", "-f"}} {
		code, out, errOut = mainOut(t, append([]string{"logs", "--nats.url", srv.URL}, args...)...)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "oops-in-the-log", args)
	}
	code, _, errOut = mainOut(t, "logs", "--nats.url", srv.URL, runID[1], "missing")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no job missing")

	// A run that succeeds exits 0.
	ok := flake(t, map[string]string{"fine": "echo fine > $out"})
	code, out, errOut = mainOut(t, "trigger", "--nats.url", srv.URL, "--local-path", ok, "--watch")
	require.Equal(t, 0, code, out+errOut)
	require.Contains(t, out, "verdict: SUCCESS (1 jobs)")

	code, _, errOut = mainOut(t, "watch", runID[1])
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--nats.url is required")
	code, _, _ = mainOut(t, "watch", "--nats.url", srv.URL)
	require.Equal(t, 2, code)
}

// mainErr runs app.Main and returns its exit code and stderr, for use in
// require.Eventually conditions (no require inside).
func mainErr(t *testing.T, args ...string) (int, string) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		return -1, err.Error()
	}
	defer f.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return -1, err.Error()
	}
	defer null.Close()
	code := app.Main(t.Context(), args, null, f)
	e, _ := os.ReadFile(f.Name())
	return code, string(e)
}

// TestLogsFollowLive: logs -f shows a build's log while it runs and ends
// with the build.
func TestLogsFollowLive(t *testing.T) {
	srv := natstest.Start(t)
	startInstances(t, srv.URL, t.TempDir(), nil)
	// The build is held until -f has shown its first line; waiting past a
	// long silence is internal/app's TestFollowLogWaitsPastSilence.
	m := newMarks(t)
	dir := flake(t, map[string]string{"slow": "echo started-building; " + m.hold("slow") + "; echo finished-building; echo ok > $out"})
	code, out, errOut := mainOut(t, "trigger", "--nats.url", srv.URL, "--local-path", dir)
	require.Equal(t, 0, code, out+errOut)
	runID := regexp.MustCompile(`(?m)^run (r[0-9a-f]+)$`).FindStringSubmatch(out)
	require.NotNil(t, runID, out)
	// Until evaluation publishes the job, logs says there is none.
	require.Eventually(t, func() bool {
		_, e := mainErr(t, "logs", "--nats.url", srv.URL, runID[1], "slow")
		return !strings.Contains(e, "no job slow")
	}, time.Minute, 50*time.Millisecond)

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	defer stderr.Close()
	done := make(chan int, 1)
	go func() {
		done <- app.Main(t.Context(), []string{"logs", "--nats.url", srv.URL, runID[1], "slow", "-f"}, w, stderr)
		w.Close()
	}()
	sc := bufio.NewScanner(r)
	for sc.Scan() && sc.Text() != "slow> started-building" {
		t.Log(sc.Text())
	}
	require.Equal(t, "slow> started-building", sc.Text(), "a line of the log while the build runs")
	m.release(t, "slow")
	var rest []string
	for sc.Scan() {
		rest = append(rest, sc.Text())
	}
	require.NoError(t, sc.Err())
	e, _ := os.ReadFile(stderr.Name())
	require.Equal(t, 0, <-done, string(e))
	require.Contains(t, rest, "slow> finished-building")
}
