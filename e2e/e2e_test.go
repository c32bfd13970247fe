// Package e2e runs examples/flake through the same wiring main uses, with
// real JetStream and real Nix: once with all six services in one instance,
// once with one instance per service sharing the NATS server.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/changeevent"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestMain fails the package if a goroutine outlives the tests: every
// instance, server and client a test starts ends at its cleanup.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

// saltedExample copies examples/flake into a temp dir with a fresh salt,
// so every derivation in it is new to the store and really gets built.
func saltedExample(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("..", "examples", "flake", "flake.nix"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "flake.nix"), src, 0o644))
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	require.NoError(t, os.WriteFile(filepath.Join(dir, "salt.txt"), []byte(t.Name()+"-"+hex.EncodeToString(nonce[:])), 0o644))
	return dir
}

func testOptions(t *testing.T, url, stateDir string, services ...string) app.Options {
	t.Helper()
	var o app.Options
	fs := newFlagSet()
	o.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"--nats.url", url, "--state-dir", stateDir, "--nix.option", "substituters="}))
	for _, s := range services {
		require.NoError(t, o.Services.Set(s))
	}
	return o
}

func testConfigs(t *testing.T) *app.Configs {
	t.Helper()
	var c app.Configs
	fs := newFlagSet()
	c.RegisterFlags(fs)
	// Shrink waits so a test run is fast; real values are the defaults.
	require.NoError(t, fs.Parse([]string{"--reporter.log-base-url", "http://ci.example/logs", "--reporter.retry-delay", "100ms"}))
	return &c
}

func logger(testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startInstances starts one instance per group of services and stops them
// all at cleanup.
func startInstances(t *testing.T, url, stateDir string, groups ...[]string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var insts []*app.Instance
	for _, g := range groups {
		inst, err := app.Start(ctx, testOptions(t, url, stateDir, g...), testConfigs(t), io.Discard, logger(t))
		require.NoError(t, err)
		insts = append(insts, inst)
	}
	t.Cleanup(func() {
		cancel()
		for _, inst := range insts {
			require.NoError(t, inst.Wait())
		}
	})
}

func TestExampleFlakeAllInOne(t *testing.T) {
	srv := natstest.Start(t)
	state := t.TempDir()
	startInstances(t, srv.URL, state, nil) // nil: all six services
	runExample(t, srv, state)
}

func TestExampleFlakeOneServicePerInstance(t *testing.T) {
	srv := natstest.Start(t)
	state := t.TempDir()
	var groups [][]string
	for _, name := range app.Names() {
		groups = append(groups, []string{name})
	}
	startInstances(t, srv.URL, state, groups...)
	runExample(t, srv, state)
}

// follow runs the flake in dir through the services on srv, as `nixbus
// run` would, and returns the finished run.
func follow(t *testing.T, srv *natstest.Server, dir string) (*app.RunResult, jetstream.JetStream) {
	t.Helper()
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var out strings.Builder
	ev, err := changeevent.Manual(changeevent.Options{LocalPath: dir})
	require.NoError(t, err)
	res, err := app.Follow(ctx, js, ev, &out, logger(t))
	require.NoError(t, err, out.String())
	t.Log(out.String())
	return res, js
}

func runExample(t *testing.T, srv *natstest.Server, state string) {
	res, js := follow(t, srv, saltedExample(t))
	ctx := t.Context()

	outcomes := map[string]*nixbuspb.JobOutcome{}
	for _, o := range res.Outcomes {
		_, dup := outcomes[o.GetAttr()]
		require.False(t, dup, "job %s reported twice", o.GetAttr())
		outcomes[o.GetAttr()] = o
	}
	want := map[string]nixbuspb.JobStatus{
		"chain1": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, "chain2": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED,
		"chain3": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, "nested.hello": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED,
		"nested.wrapped": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, "broken": nixbuspb.JobStatus_JOB_STATUS_FAILED,
		"after-broken": nixbuspb.JobStatus_JOB_STATUS_SKIPPED, "eval-error": nixbuspb.JobStatus_JOB_STATUS_FAILED,
	}
	require.Len(t, outcomes, len(want))
	for attr, status := range want {
		require.Contains(t, outcomes, attr)
		require.Equal(t, status, outcomes[attr].GetStatus(), attr)
	}
	require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_BUILD, outcomes["broken"].GetFailure())
	require.Contains(t, outcomes["broken"].GetReason(), "broken.drv")
	require.NotEmpty(t, outcomes["broken"].GetLogKey())
	require.Equal(t, "dependency broken failed", outcomes["after-broken"].GetReason())
	require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_EVAL, outcomes["eval-error"].GetFailure())
	require.Contains(t, outcomes["eval-error"].GetReason(), "this job does not evaluate")

	v := res.Verdict
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.EqualValues(t, 8, v.GetJobCount())
	require.EqualValues(t, 5, v.GetSucceededCount())
	require.EqualValues(t, 2, v.GetFailedCount())
	require.EqualValues(t, 1, v.GetSkippedCount())

	msg := res.Review.GetMessage()
	require.Equal(t, int32(-1), res.Review.GetVerified())
	require.True(t, strings.HasPrefix(msg, "The result is: FAILURE\n"), msg)
	require.Contains(t, msg, "Failed checks:\n")
	require.Contains(t, msg, " - broken: build failed: ")
	require.Contains(t, msg, "(see http://ci.example/logs/"+res.RunID+"/")
	// As the original words it, with the failed dependency's log.
	require.Contains(t, msg, " - after-broken: dependency broken failed (see http://ci.example/logs/"+outcomes["broken"].GetLogKey()+")\n")
	require.Contains(t, msg, " - eval-error: evaluation error: ")
	require.NotContains(t, msg, "chain1")

	// The failed job's log is kept and says why it failed.
	logs, err := js.ObjectStore(ctx, bus.LogBucket)
	require.NoError(t, err)
	logText, err := logs.GetBytes(ctx, outcomes["broken"].GetLogKey())
	require.NoError(t, err)
	require.Contains(t, string(logText), "this job fails on purpose")

	// What was built is signed in the binary cache.
	require.Len(t, res.Uploads, 5)
	var paths []string
	for _, u := range res.Uploads {
		require.True(t, u.GetOk(), u.GetError())
		paths = append(paths, u.GetStorePaths()...)
	}
	pub, err := os.ReadFile(filepath.Join(state, "keys", "nixbus-cache.sec.pub"))
	require.NoError(t, err)
	verify := exec.CommandContext(ctx, "nix", append([]string{"--extra-experimental-features", "nix-command flakes",
		"store", "verify", "--store", "file://" + filepath.Join(state, "cache"),
		"--trusted-public-keys", strings.TrimSpace(string(pub))}, paths...)...)
	vout, err := verify.CombinedOutput()
	require.NoError(t, err, string(vout))

	// No job was built twice: one build result per derivation.
	require.Len(t, buildResults(t, js, res.RunID), 6, "five successes and one failure")
}
