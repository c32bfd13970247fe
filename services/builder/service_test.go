package builder

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

// TestBuildStatuses builds with each way of running nix: over nix-daemon
// connections (the default) and with a nix build process per build.
func TestBuildStatuses(t *testing.T) {
	for _, cli := range []bool{false, true} {
		t.Run(map[bool]string{false: "daemon", true: "nix-cli"}[cli], func(t *testing.T) { testBuildStatuses(t, cli) })
	}
}

func testBuildStatuses(t *testing.T, cli bool) {
	system := currentSystem(t)
	// Each limit has a builder of its own, so neither races the other (or
	// nix's start on a loaded machine): the silence limit ends "silent"
	// long before a time limit of a minute, and the time limit ends "slow",
	// which is never silent for long.
	quiet := testConfig(t, system, "b1")
	quiet.Concurrency = 3
	quiet.MaxSilentTime = time.Second
	quiet.NixCLI = cli
	drvs, js := buildAll(t, quiet, map[string]string{
		"ok":     `echo hello from the builder; echo built > $out`,
		"broken": `echo about to fail; exit 3`,
		"silent": `echo going quiet; sleep 600; echo never > $out`,
	})
	limited := testConfig(t, system, "b1")
	limited.Timeout = 3 * time.Second
	limited.NixCLI = cli
	slowDrvs, slowJS := buildAll(t, limited, map[string]string{
		"slow": `while true; do echo tick; sleep 0.2; done`,
	})
	run := "rstatuses"
	got, slowGot := waitResults(t, js, run, len(drvs)), waitResults(t, slowJS, run, len(slowDrvs))

	tests := []struct {
		name   string
		status nixbuspb.BuildStatus
		errHas []string
		logHas string
	}{
		{"ok", nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, nil, "hello from the builder"},
		{"broken", nixbuspb.BuildStatus_BUILD_STATUS_FAILED, []string{drvs["broken"], "failed with exit code 3"}, "about to fail"},
		{"silent", nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT, []string{"silence"}, "going quiet"},
		// Its log may be empty: nix may start it only after the time limit.
		{"slow", nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT, []string{"timed out after 3s"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drvs, got, js := drvs, got, js
			if tt.name == "slow" {
				drvs, got, js = slowDrvs, slowGot, slowJS
			}
			res := got[drvs[tt.name]]
			require.NotNil(t, res)
			require.Equal(t, tt.status, res.GetStatus(), res.GetError())
			require.Equal(t, run, res.GetRunId())
			require.Equal(t, system, res.GetSystem())
			require.Equal(t, "b1", res.GetBuilder())
			require.Equal(t, []string{"job"}, res.GetAttrs())
			require.NotContains(t, res.GetError(), "\n")
			require.False(t, strings.HasPrefix(res.GetError(), "error:"), res.GetError())
			for _, s := range tt.errHas {
				require.Contains(t, res.GetError(), s)
			}
			require.Equal(t, bus.LogKey(run, drvs[tt.name]), res.GetLogKey())
			require.Contains(t, readLog(t, js, res.GetLogKey()), tt.logHas)
			if tt.status == nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED {
				require.Zero(t, res.GetExitCode())
				out := res.GetOutputs()["out"]
				require.True(t, strings.HasPrefix(out, "/nix/store/"), out)
				data, err := os.ReadFile(out)
				require.NoError(t, err)
				require.Equal(t, "built\n", string(data))
				// The out-link keeps the output alive until it is uploaded.
				link, err := os.Readlink(filepath.Join(quiet.WorkDir, run, strings.TrimSuffix(filepath.Base(drvs[tt.name]), ".drv")))
				require.NoError(t, err)
				require.Equal(t, out, link)
			} else {
				require.NotZero(t, res.GetExitCode())
				require.Empty(t, res.GetOutputs())
			}
		})
	}
}

// Two builders of one system share the work: each builds some, and every
// derivation is built once and gets one result.
func TestBuildersShareWork(t *testing.T) {
	system := currentSystem(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	marks := markerDir(t)
	built, release := sharedFile(t, marks, "built"), filepath.Join(marks, "release")
	scripts := map[string]string{}
	for i := range 6 {
		name := fmt.Sprintf("job%d", i)
		scripts[name] = fmt.Sprintf(`echo %s >> %s; while [ ! -e %s ]; do sleep 0.05; done; echo %s > $out`, name, built, release, name)
	}
	drvs := derivations(t, scripts)
	a := startBuilder(t, srv, testConfig(t, system, "a"))
	b := startBuilder(t, srv, testConfig(t, system, "b"))
	run := "rshare"
	for _, drv := range drvs {
		request(t, js, run, system, drv)
	}
	// Builds are held until two run at once: with one build at a time per
	// builder, each builder has one.
	require.Eventually(t, func() bool { return len(lines(built)) == 2 }, time.Minute, 20*time.Millisecond, "two builds never ran at once")
	require.NoError(t, os.WriteFile(release, nil, 0o644))
	got := waitResults(t, js, run, len(drvs))

	perBuilder := map[string]int{}
	for _, res := range got {
		require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, res.GetStatus(), res.GetError())
		perBuilder[res.GetBuilder()]++
	}
	require.Positive(t, perBuilder["a"], "builder a built nothing: %v", perBuilder)
	require.Positive(t, perBuilder["b"], "builder b built nothing: %v", perBuilder)
	require.ElementsMatch(t, []string{"job0", "job1", "job2", "job3", "job4", "job5"}, lines(built))
	// Nothing was published twice (de-duplication would hide it in the stream).
	require.Equal(t, float64(len(drvs)), a.counter(t, "nixbus_builder_results_total")+b.counter(t, "nixbus_builder_results_total"))
}

// A builder stopped mid-build publishes nothing and acks nothing; another
// builder then builds the derivation and publishes the one result.
func TestStoppedBuilderLosesNoJob(t *testing.T) {
	system := currentSystem(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	marks := markerDir(t)
	starts, release := sharedFile(t, marks, "starts"), filepath.Join(marks, "release")
	// The build is held until the first builder has stopped.
	drv := derivations(t, map[string]string{
		"interrupted": fmt.Sprintf(`echo start >> %s; while [ ! -e %s ]; do sleep 0.05; done; echo done > $out`, starts, release),
	})["interrupted"]
	run := "rstopped"

	a := startBuilder(t, srv, testConfig(t, system, "a"))
	request(t, js, run, system, drv)
	require.Eventually(t, func() bool { return len(lines(starts)) == 1 },
		30*time.Second, 50*time.Millisecond, "the build never started")
	a.stop()
	require.Empty(t, results(t, js, run), "a stopped builder published a result")
	require.Zero(t, a.counter(t, "nixbus_builder_results_total"))
	require.NoError(t, os.WriteFile(release, nil, 0o644))

	startBuilder(t, srv, testConfig(t, system, "b"))
	got := waitResults(t, js, run, 1)[drv]
	require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, got.GetStatus(), got.GetError())
	require.Equal(t, "b", got.GetBuilder())
	require.Len(t, lines(starts), 2)
	require.Len(t, results(t, js, run), 1)
}

// Cancelling a run kills its running builds, and builds of a cancelled run
// are not started.
func TestCancelKillsRunningBuild(t *testing.T) {
	system := currentSystem(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	marks := markerDir(t)
	drvs := derivations(t, map[string]string{
		"long":  fmt.Sprintf(`echo $$ > %s/pid.tmp; mv %s/pid.tmp %s/pid; exec sleep 100000`, marks, marks, marks),
		"later": fmt.Sprintf(`echo ran > %s/later; echo x > $out`, marks),
	})
	startBuilder(t, srv, testConfig(t, system, "b1"))
	run := "rcancel"
	request(t, js, run, system, drvs["long"])

	var pid int
	require.Eventually(t, func() bool {
		l := lines(filepath.Join(marks, "pid"))
		if len(l) != 1 {
			return false
		}
		var err error
		pid, err = strconv.Atoi(l[0])
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "the build never started")
	require.NoError(t, syscall.Kill(pid, 0))

	err := bus.NewPublisher(js, slog.New(slog.DiscardHandler)).Publish(t.Context(), bus.RunSubject(run, bus.RunCancelKind), bus.MsgIDCancel(run),
		&nixbuspb.Cancel{RunId: run, Reason: "superseded"}, nil)
	require.NoError(t, err)
	res := waitResults(t, js, run, 1)[drvs["long"]]
	require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_CANCELLED, res.GetStatus())
	require.Eventually(t, func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) },
		10*time.Second, 50*time.Millisecond, "the builder process outlived the cancellation")

	// A request of the cancelled run is answered without building.
	request(t, js, run, system, drvs["later"])
	res = waitResults(t, js, run, 2)[drvs["later"]]
	require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_CANCELLED, res.GetStatus())
	require.Empty(t, res.GetLogKey())
	require.Empty(t, lines(filepath.Join(marks, "later")))
}

func TestInstantMode(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t, "fake-system", "bench")
	cfg.Instant = true
	startBuilder(t, srv, cfg)
	drv := "/nix/store/00000000000000000000000000000000-never-built.drv"
	outputs := map[string]string{"out": "/nix/store/00000000000000000000000000000000-never-built"}
	req := &nixbuspb.BuildRequest{RunId: "rinstant", DrvPath: drv, System: "fake-system", Outputs: outputs}
	err := bus.NewPublisher(js, slog.New(slog.DiscardHandler)).Publish(t.Context(), bus.BuildSubject("fake-system"), bus.MsgIDBuild("rinstant", drv), req, nil)
	require.NoError(t, err)
	res := waitResults(t, js, "rinstant", 1)[drv]
	require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, res.GetStatus())
	require.Equal(t, outputs, res.GetOutputs())
	require.Empty(t, res.GetLogKey())
}

// TestCancelLookedUpOncePerRun: the runs stream is asked for a run's
// cancellation before its first build only; later cancellations come by
// the subscription, which still stops the run's next builds.
func TestCancelLookedUpOncePerRun(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t, "fake-system", "bench")
	cfg.Instant = true
	b := startBuilder(t, srv, cfg)
	drv := func(i int) string { return fmt.Sprintf("/nix/store/%032d-job.drv", i) }
	const run = "ronce"
	for i := range 4 {
		request(t, js, run, "fake-system", drv(i))
		require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, waitResults(t, js, run, i+1)[drv(i)].GetStatus())
	}
	require.Equal(t, 1.0, b.counter(t, "nixbus_builder_cancel_lookups_total"), "one lookup for four builds")

	err := bus.NewPublisher(js, slog.New(slog.DiscardHandler)).Publish(t.Context(), bus.RunSubject(run, bus.RunCancelKind), bus.MsgIDCancel(run),
		&nixbuspb.Cancel{RunId: run, Reason: "superseded"}, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		b.svc.cancels.mu.Lock()
		defer b.svc.cancels.mu.Unlock()
		_, ok := b.svc.cancels.seen[run]
		return ok
	}, 10*time.Second, 10*time.Millisecond, "the cancellation never came by the subscription")
	request(t, js, run, "fake-system", drv(4))
	require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_CANCELLED, waitResults(t, js, run, 5)[drv(4)].GetStatus())
	request(t, js, "rother", "fake-system", drv(5))
	waitResults(t, js, "rother", 1)
	require.Equal(t, 2.0, b.counter(t, "nixbus_builder_cancel_lookups_total"), "another run is looked up")
}

func TestCheckRequest(t *testing.T) {
	h := &handler{s: &Service{cfg: Config{StoreDir: "/nix/store"}}}
	good := "/nix/store/lcaxr125pbf4l5iizkxqhgh9m3yz8baa-t.drv"
	tests := []struct {
		name, run, drv string
		ok             bool
	}{
		{"valid", "r0123abc", good, true},
		{"run with dots", "r.1", good, false},
		{"run path traversal", "../x", good, false},
		{"empty run", "", good, false},
		{"not a drv", "r1", "/nix/store/lcaxr125pbf4l5iizkxqhgh9m3yz8baa-t", false},
		{"outside the store", "r1", "/tmp/lcaxr125pbf4l5iizkxqhgh9m3yz8baa-t.drv", false},
		{"nested", "r1", "/nix/store/x/lcaxr125pbf4l5iizkxqhgh9m3yz8baa-t.drv", false},
		{"traversal", "r1", "/nix/store/../lcaxr125pbf4l5iizkxqhgh9m3yz8baa-t.drv", false},
		{"flake ref", "r1", "github:evil/flake#x.drv", false},
		{"short hash", "r1", "/nix/store/abc-t.drv", false},
		{"shell chars", "r1", "/nix/store/lcaxr125pbf4l5iizkxqhgh9m3yz8baa-t;rm.drv", false},
		{"empty", "r1", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := h.check(&nixbuspb.BuildRequest{RunId: tt.run, DrvPath: tt.drv})
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

// A request that can never be built is dropped, not retried.
func TestMalformedRequestDropped(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t, "fake-system", "b1")
	cfg.Instant = true
	startBuilder(t, srv, cfg)
	for i, data := range [][]byte{[]byte("not protobuf \xff\xff"), mustEncode(t, &nixbuspb.BuildRequest{RunId: "r1", DrvPath: "/etc/passwd"})} {
		_, err := js.Publish(t.Context(), bus.BuildSubject("fake-system"), data)
		require.NoError(t, err, "message %d", i)
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		stream, err := js.Stream(t.Context(), bus.StreamBuilds)
		require.NoError(c, err)
		info, err := stream.Info(t.Context())
		require.NoError(c, err)
		assert.Zero(c, info.State.Msgs)
	}, 10*time.Second, 50*time.Millisecond, "malformed requests stayed queued")
	require.Empty(t, results(t, js, "r1"))
}

func mustEncode(t *testing.T, m *nixbuspb.BuildRequest) []byte {
	t.Helper()
	data, err := bus.Encode(m)
	require.NoError(t, err)
	return data
}

// A remote-only builder passes --max-jobs 0: with no remote builders
// configured, nix refuses to build locally.
func TestRemoteOnlyBuildsNothingLocally(t *testing.T) {
	system := currentSystem(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t, system, "farm")
	cfg.RemoteOnly = true
	startBuilder(t, srv, cfg)
	drv := derivations(t, map[string]string{"remote": `echo x > $out`})["remote"]
	request(t, js, "rremote", system, drv)
	res := waitResults(t, js, "rremote", 1)[drv]
	require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_FAILED, res.GetStatus())
	require.Contains(t, res.GetError(), "unable to start any build")
}

// TestBuilderWithoutNixDaemonStops: a builder that cannot reach nix
// (here: a nix with no nix-daemon next to it) ends at start with an error
// that says so, instead of taking builds it cannot run.
func TestBuilderWithoutNixDaemonStops(t *testing.T) {
	real, err := exec.LookPath("nix")
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.Symlink(real, filepath.Join(dir, "nix")))
	n := testNix()
	n.Bin = filepath.Join(dir, "nix")
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	svc, err := New(testConfig(t, currentSystem(t), "b1"), Deps{JS: js, Logger: slog.New(slog.DiscardHandler), Nix: n})
	require.NoError(t, err)
	err = svc.Run(t.Context())
	require.ErrorContains(t, err, "nix-daemon")
	require.ErrorContains(t, err, "--builder.nix-cli")
}
