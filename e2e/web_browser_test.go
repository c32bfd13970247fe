package e2e

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/internal/oidctest"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/changeevent"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestWebInBrowser drives headless Chromium (playwright-core, e2e/web)
// through the web pages of a real nixbus with real Nix: the runs page lists
// a running run, a build's log tails live, a non-admin logs in through an
// OIDC provider and cannot restart, an admin restarts the failed job, which
// is rebuilt. Screenshots land in e2e/web/artifacts. `make test-web` runs
// it (it needs chromium and `npm ci` in e2e/web).
func TestWebInBrowser(t *testing.T) {
	if os.Getenv("NIXBUS_BROWSER_TEST") == "" {
		t.Skip("the browser test runs with NIXBUS_BROWSER_TEST=1: `make test-web`")
	}
	node, err := exec.LookPath("node")
	require.NoError(t, err, "node is needed")
	_, err = os.Stat(filepath.Join("web", "node_modules", "playwright-core"))
	require.NoError(t, err, "run `npm ci` in e2e/web first (make test-web does)")

	// The pages' address must be known before they start (OIDC redirects).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	base := "http://" + addr

	op := oidctest.Start(t, oidctest.Client{ID: "nixbus", Secret: "s3cret", RedirectURI: base + "/auth/callback"}, map[string]oidctest.User{
		"alice": {Subject: "alice-sub", Email: "alice@example.org", Name: "Alice"},
		"bob":   {Subject: "bob-sub", Email: "bob@example.org", Name: "Bob"},
	})
	secret := filepath.Join(t.TempDir(), "client-secret")
	require.NoError(t, os.WriteFile(secret, []byte("s3cret"), 0o600))

	srv := natstest.Start(t)
	state := t.TempDir()
	o := testOptions(t, srv.URL, state)
	o.HTTPAddress = addr
	var c app.Configs
	fs := newFlagSet()
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{
		"--reporter.log-base-url", base + "/logs", "--reporter.retry-delay", "100ms",
		"--builder.live-log-interval", "100ms", "--builder.concurrency", "2",
		"--web.base-url", base, "--web.oidc-issuer", op.Issuer(), "--web.oidc-client-id", "nixbus",
		"--web.oidc-client-secret-file", secret, "--web.admins", "alice@example.org",
	}))
	ctx, cancel := context.WithCancel(t.Context())
	inst, err := app.Start(ctx, o, &c, io.Discard, logger(t))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		require.NoError(t, inst.Wait())
	})

	m := newMarks(t)
	release, fix := filepath.Join(string(m), "release"), filepath.Join(string(m), "fix")
	dir := flake(t, map[string]string{
		"held":  "echo live line one; while [ ! -e " + release + " ]; do sleep 0.1; done; echo live line two; echo ok > $out",
		"flaky": "if [ -e " + fix + " ]; then echo flaky is fixed; echo ok > $out; else echo flaky fails >&2; exit 1; fi",
	})
	_, js := srv.Connect(t)
	ev, err := changeevent.Manual(changeevent.Options{LocalPath: dir})
	require.NoError(t, err)
	require.NoError(t, bus.NewPublisher(js, logger(t)).Publish(ctx, bus.ChangeSubject(ev.GetProject()), bus.MsgIDChange(ev.GetEventId()), ev, nil))
	run := bus.RunID(ev.GetEventId())

	shots, err := filepath.Abs(filepath.Join("web", "artifacts"))
	require.NoError(t, err)
	cmd := exec.CommandContext(ctx, node, "browser.mjs")
	cmd.Dir = "web"
	cmd.Env = append(os.Environ(), "BASE_URL="+base, "RUN="+run, "RELEASE="+release, "FIX="+fix, "SHOTS="+shots)
	out, err := cmd.CombinedOutput()
	t.Logf("browser:\n%s", out)
	require.NoError(t, err, "the browser test failed; screenshots in %s", shots)

	// What the admin's press did on the bus: one restart, one rebuild that
	// succeeded; bob's presses published nothing.
	restarts := natstest.Read[nixbuspb.RestartJob](t, js, bus.StreamRuns, bus.RunSubject(run, bus.RunRestartKind))
	require.Len(t, restarts, 1)
	require.Equal(t, "alice", restarts[0].GetRequestedBy())
	var rebuilt []*nixbuspb.BuildResult
	for _, r := range natstest.Read[nixbuspb.BuildResult](t, js, bus.StreamRuns, bus.RunSubject(run, bus.RunResultKind)) {
		if r.GetRestartSeq() > 0 {
			rebuilt = append(rebuilt, r)
		}
	}
	require.Len(t, rebuilt, 1)
	require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, rebuilt[0].GetStatus())
	require.Equal(t, []string{"flaky"}, rebuilt[0].GetAttrs())
}
