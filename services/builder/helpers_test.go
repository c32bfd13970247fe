package builder

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	"nixbus.dev/nixbus/pkg/nix"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// testNix is nix without substituters (there is no network) and without
// remote builders (every build is local unless --max-jobs 0).
func testNix() *nix.Nix {
	return &nix.Nix{Options: map[string]string{"substituters": "", "builders": ""}}
}

var (
	systemOnce sync.Once
	systemName string
	systemErr  error
)

// currentSystem is the system nix builds for on this host.
func currentSystem(t *testing.T) string {
	t.Helper()
	systemOnce.Do(func() {
		out, err := testNix().Output(t.Context(), []string{"eval"}, "--raw", "--impure", "--expr", "builtins.currentSystem")
		systemName, systemErr = string(out), err
	})
	require.NoError(t, systemErr)
	return systemName
}

// markerDir is a directory the build users can write to, for builders to
// leave traces of what they did.
func markerDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nixbus-builder-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o777))
	t.Cleanup(func() { require.NoError(t, os.RemoveAll(dir)) })
	return dir
}

// sharedFile creates a file in dir that every build user may append to.
func sharedFile(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, nil, 0o666))
	require.NoError(t, os.Chmod(path, 0o666))
	return path
}

// derivations instantiates one derivation per name, running the script
// with /bin/sh, salted so that every test builds for real. It returns the
// derivation paths by name.
func derivations(t *testing.T, scripts map[string]string) map[string]string {
	t.Helper()
	data, err := json.Marshal(scripts)
	require.NoError(t, err)
	salt := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	expr := fmt.Sprintf(`builtins.mapAttrs (name: script: (derivation {
		inherit name;
		system = builtins.currentSystem;
		builder = "/bin/sh";
		args = [ "-c" script ];
		PATH = "/usr/bin:/bin";
		salt = %s;
	}).drvPath) (builtins.fromJSON %s)`, nix.StringLiteral(salt), nix.StringLiteral(string(data)))
	out, err := testNix().Output(t.Context(), []string{"eval"}, "--json", "--impure", "--expr", expr)
	require.NoError(t, err)
	drvs := map[string]string{}
	require.NoError(t, json.Unmarshal(out, &drvs))
	return drvs
}

func testConfig(t *testing.T, system, name string) Config {
	return Config{
		System: system, Name: name, Concurrency: 1, WorkDir: t.TempDir(), StoreDir: "/nix/store",
		Timeout: time.Minute, MaxSilentTime: time.Minute, KillGrace: 5 * time.Second, MaxLogBytes: 1 << 20,
		OutLinkTTL: time.Hour, PruneInterval: time.Hour, AckWait: 3 * time.Second, RetryDelay: 100 * time.Millisecond,
		HeartbeatInterval: 50 * time.Millisecond, MaxRetries: 2, RetryBackoff: 10 * time.Millisecond,
	}
}

type running struct {
	svc  *Service
	reg  *prometheus.Registry
	stop func()
}

// startBuilder runs a builder on its own NATS connection until stop (or
// the end of the test).
func startBuilder(t *testing.T, srv *natstest.Server, cfg Config) *running {
	t.Helper()
	_, js := srv.Connect(t)
	reg := prometheus.NewRegistry()
	svc, err := New(cfg, Deps{JS: js, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg, Nix: testNix()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return &running{svc: svc, reg: reg, stop: stop}
}

// counter sums the samples of a counter family.
func (r *running) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func request(t *testing.T, js jetstream.JetStream, run, system, drv string) {
	t.Helper()
	req := &nixbuspb.BuildRequest{RunId: run, DrvPath: drv, System: system, Attrs: []string{"job"}}
	err := bus.NewPublisher(js, slog.New(slog.DiscardHandler)).Publish(t.Context(), bus.BuildSubject(system), bus.MsgIDBuild(run, drv), req, nil)
	require.NoError(t, err)
}

// results reads every build result of run on the stream, in order.
func results(t *testing.T, js jetstream.JetStream, run string) []*nixbuspb.BuildResult {
	t.Helper()
	return natstest.Read[nixbuspb.BuildResult](t, js, bus.StreamRuns, bus.RunSubject(run, bus.RunResultKind))
}

// waitResults waits until run has n results and returns them by drv.
func waitResults(t *testing.T, js jetstream.JetStream, run string, n int) map[string]*nixbuspb.BuildResult {
	t.Helper()
	var got []*nixbuspb.BuildResult
	require.Eventually(t, func() bool {
		var err error
		got, err = natstest.TryRead[nixbuspb.BuildResult](t.Context(), js, bus.StreamRuns, bus.RunSubject(run, bus.RunResultKind))
		return err == nil && len(got) >= n
	}, 90*time.Second, 100*time.Millisecond, "waiting for %d results of %s", n, run)
	byDrv := map[string]*nixbuspb.BuildResult{}
	for _, r := range got {
		require.NotContains(t, byDrv, r.GetDrvPath(), "two results for one derivation")
		byDrv[r.GetDrvPath()] = r
	}
	require.Len(t, byDrv, n)
	return byDrv
}

// readLog fetches a stored build log.
func readLog(t *testing.T, js jetstream.JetStream, key string) string {
	t.Helper()
	logs, err := js.ObjectStore(t.Context(), bus.LogBucket)
	require.NoError(t, err)
	data, err := logs.GetBytes(t.Context(), key)
	require.NoError(t, err)
	return string(data)
}

// lines reads a marker file written by builders (empty if absent).
func lines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil // not written yet; a count of lines then fails
	}
	return strings.Fields(string(data))
}

// buildAll starts building one derivation per script on a builder of cfg
// (with a NATS server of its own) as run "rstatuses", and returns the
// derivations by name and the JetStream their results go to.
func buildAll(t *testing.T, cfg Config, scripts map[string]string) (drvs map[string]string, js jetstream.JetStream) {
	t.Helper()
	srv := natstest.Start(t)
	_, js = srv.Connect(t)
	startBuilder(t, srv, cfg)
	drvs = derivations(t, scripts)
	for _, drv := range drvs {
		request(t, js, "rstatuses", cfg.System, drv)
	}
	return drvs, js
}
