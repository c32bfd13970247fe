package cacheuploader

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	"nixbus.dev/nixbus/pkg/nix"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

func testNix() *nix.Nix { return &nix.Nix{Options: map[string]string{"substituters": ""}} }

type built struct{ drv, out string }

// buildChain builds a salted two-derivation chain, top's output referring
// to dep's (a runtime dependency), and returns both, kept alive by
// out-links in a temp dir.
func buildChain(t *testing.T) (dep, top built) {
	t.Helper()
	salt := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	expr := fmt.Sprintf(`let
		mk = name: script: derivation {
			inherit name;
			system = builtins.currentSystem;
			builder = "/bin/sh";
			args = [ "-c" script ];
			PATH = "/usr/bin:/bin";
			salt = %s;
		};
		dep = mk "dep" "echo dep > $out";
		top = mk "top" "cat ${dep} > $out; echo ${dep} >> $out";
	in { dep = dep.drvPath; top = top.drvPath; }`, nix.StringLiteral(salt))
	out, err := testNix().Output(t.Context(), []string{"eval"}, "--json", "--impure", "--expr", expr)
	require.NoError(t, err)
	var drvs struct{ Dep, Top string }
	require.NoError(t, json.Unmarshal(out, &drvs))
	links := t.TempDir()
	unregisterRoots(t, links)
	res := map[string]built{}
	for name, drv := range map[string]string{"dep": drvs.Dep, "top": drvs.Top} {
		out, err := testNix().Output(t.Context(), []string{"build"}, "--json", "--out-link", filepath.Join(links, name), drv)
		require.NoError(t, err)
		var r []struct{ Outputs map[string]string }
		require.NoError(t, json.Unmarshal(out, &r))
		res[name] = built{drv: drv, out: r[0].Outputs["out"]}
	}
	return res["dep"], res["top"]
}

func testConfig(t *testing.T) Config {
	dir := t.TempDir()
	return Config{
		CacheURL: "file://" + filepath.Join(dir, "cache"), SecretKeyFile: filepath.Join(dir, "keys", "cache.sec"),
		GenerateKey: true, KeyName: "nixbus-test-1", Concurrency: 4, BatchBuilds: 16, StoreDir: "/nix/store", MaxAttempts: 2,
		AckWait: 5 * time.Second, RetryDelay: 50 * time.Millisecond, DefaultBranch: "main",
	}
}

func start(t *testing.T, srv *natstest.Server, cfg Config) *Service {
	t.Helper()
	return startWith(t, srv, cfg, prometheus.NewRegistry())
}

func startWith(t *testing.T, srv *natstest.Server, cfg Config, reg prometheus.Registerer) *Service {
	t.Helper()
	_, js := srv.Connect(t)
	svc, err := New(cfg, Deps{JS: js, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Nix: testNix(), Registerer: reg})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return svc
}

// publishResult puts a build result on the runs stream with the given
// message id (a redelivery is the same result under another id here).
func publishResult(t *testing.T, js jetstream.JetStream, msgID string, res *nixbuspb.BuildResult) {
	t.Helper()
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	err := bus.NewPublisher(js, slog.New(slog.DiscardHandler)).Publish(t.Context(),
		bus.RunSubject(res.GetRunId(), bus.RunResultKind), msgID, res, nil)
	require.NoError(t, err)
}

func uploads(t *testing.T, js jetstream.JetStream, run string) []*nixbuspb.UploadResult {
	t.Helper()
	return natstest.Read[nixbuspb.UploadResult](t, js, bus.StreamReports, bus.UploadSubject(run))
}

// drained waits until the uploader has acked every build result on the
// stream. The ack floor is checked against the last result, not only the
// pending counts: a consumer created while a message is stored can report
// nothing pending for a moment.
func drained(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	drainedBy(t, js, Consumer(nil))
}

func drainedBy(t *testing.T, js jetstream.JetStream, durable string) {
	t.Helper()
	st, err := js.Stream(t.Context(), bus.StreamRuns)
	require.NoError(t, err)
	last, err := st.GetLastMsgForSubject(t.Context(), bus.RunResults)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		c, err := js.Consumer(t.Context(), bus.StreamRuns, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		if err != nil {
			return false
		}
		return info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= last.Sequence
	}, 60*time.Second, 50*time.Millisecond, "the uploader did not work through the results")
}

func TestUploadSignsAndCopies(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t)
	svc := start(t, srv, cfg)
	dep, top := buildChain(t)
	run := "rupload"

	// A failed build uploads nothing, even if it names outputs.
	publishResult(t, js, bus.MsgIDResult(run, dep.drv), &nixbuspb.BuildResult{
		RunId: run, DrvPath: dep.drv, Status: nixbuspb.BuildStatus_BUILD_STATUS_FAILED, Outputs: map[string]string{"out": dep.out},
	})
	ok := &nixbuspb.BuildResult{RunId: run, DrvPath: top.drv, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Outputs: map[string]string{"out": top.out}}
	publishResult(t, js, bus.MsgIDResult(run, top.drv), ok)
	// The same result again, as after a redelivery: still one upload result.
	publishResult(t, js, bus.MsgIDResult(run, top.drv)+":again", ok)
	drained(t, js)

	got := uploads(t, js, run)
	require.Len(t, got, 1)
	require.True(t, got[0].GetOk(), got[0].GetError())
	require.Equal(t, top.drv, got[0].GetDrvPath())
	require.Equal(t, []string{top.out}, got[0].GetStorePaths())
	require.Equal(t, cfg.CacheURL, got[0].GetCacheUrl())

	pub := svc.PublicKey()
	require.True(t, strings.HasPrefix(pub, "nixbus-test-1:"), pub)
	// Clients trusting only this key accept the output and its closure.
	for _, p := range []string{top.out, dep.out} {
		_, err := testNix().Output(t.Context(), []string{"store", "verify"}, "--store", cfg.CacheURL, "--trusted-public-keys", pub, p)
		require.NoError(t, err, p)
	}
	_, err := testNix().Output(t.Context(), []string{"store", "verify"}, "--store", cfg.CacheURL,
		"--trusted-public-keys", "other-1:"+strings.SplitN(pub, ":", 2)[1], top.out)
	require.Error(t, err, "verification with another key must fail")
	sigs, err := testNix().Output(t.Context(), []string{"path-info"}, "--store", cfg.CacheURL, "--sigs", top.out)
	require.NoError(t, err)
	require.Contains(t, string(sigs), "nixbus-test-1:")
}

// TestKnownOutputsAreNotCopiedAgain: an upload to a file:// cache is one
// nix copy (which signs), and outputs this uploader put in the cache are
// not copied again when another run builds them.
func TestKnownOutputsAreNotCopiedAgain(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	reg := prometheus.NewRegistry()
	svc := startWith(t, srv, testConfig(t), reg)
	_, top := buildChain(t)
	ok := func(run string) *nixbuspb.BuildResult {
		return &nixbuspb.BuildResult{RunId: run, DrvPath: top.drv, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Outputs: map[string]string{"out": top.out}}
	}
	publishResult(t, js, "k1", ok("rknown1"))
	drained(t, js)
	calls := func() float64 { return testutil.ToFloat64(svc.metrics.nixCalls.WithLabelValues("copy")) }
	require.Equal(t, 1.0, calls())
	require.Zero(t, testutil.ToFloat64(svc.metrics.nixCalls.WithLabelValues("sign")), "the cache signs what nix copy writes")
	publishResult(t, js, "k2", ok("rknown2"))
	drained(t, js)
	require.Equal(t, 1.0, calls(), "a known output is not copied again")
	got := uploads(t, js, "rknown2")
	require.Len(t, got, 1)
	require.True(t, got[0].GetOk(), got[0].GetError())
}

// TestUploadersPerHost: uploaders told which builders share their host's
// store upload only those builds; each host's uploaders have a consumer of
// their own, so every build is uploaded from the host that built it.
func TestUploadersPerHost(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	hostA, hostB := testConfig(t), testConfig(t)
	hostA.Builders, hostB.Builders = []string{"a1", "a2"}, []string{"b1"}
	start(t, srv, hostA)
	start(t, srv, hostB)
	dep, top := buildChain(t)
	run := "rhosts"
	publishResult(t, js, "r1", &nixbuspb.BuildResult{RunId: run, DrvPath: dep.drv, Builder: "b1",
		Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Outputs: map[string]string{"out": dep.out}})
	publishResult(t, js, "r2", &nixbuspb.BuildResult{RunId: run, DrvPath: top.drv, Builder: "a2",
		Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Outputs: map[string]string{"out": top.out}})
	drainedBy(t, js, Consumer(hostA.Builders))
	drainedBy(t, js, Consumer(hostB.Builders))

	by := map[string]string{}
	for _, u := range uploads(t, js, run) {
		require.True(t, u.GetOk(), u.GetError())
		by[u.GetDrvPath()] = u.GetCacheUrl()
	}
	require.Equal(t, map[string]string{dep.drv: hostB.CacheURL, top.drv: hostA.CacheURL}, by)
	// Host B's cache holds dep only: top was not uploaded there.
	_, err := testNix().Output(t.Context(), []string{"path-info"}, "--store", hostB.CacheURL, top.out)
	require.Error(t, err)
	require.NotEqual(t, Consumer(hostA.Builders), Consumer(hostB.Builders))
	require.Equal(t, Consumer([]string{"a2", "a1"}), Consumer(hostA.Builders))
}

func TestUploadFailureIsReported(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	start(t, srv, testConfig(t))
	run := "rmissing"
	missing := "/nix/store/00000000000000000000000000000000-not-in-this-store"
	publishResult(t, js, "m1", &nixbuspb.BuildResult{
		RunId: run, DrvPath: "/nix/store/00000000000000000000000000000000-x.drv",
		Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Outputs: map[string]string{"out": missing},
	})
	publishResult(t, js, "m2", &nixbuspb.BuildResult{
		RunId: run, DrvPath: "/nix/store/11111111111111111111111111111111-y.drv",
		Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Outputs: map[string]string{"out": "/etc/passwd"},
	})
	drained(t, js)
	got := uploads(t, js, run)
	require.Len(t, got, 2)
	for _, u := range got {
		require.False(t, u.GetOk())
		require.NotContains(t, u.GetError(), "\n")
	}
	require.Contains(t, got[0].GetError()+got[1].GetError(), missing)
	require.Contains(t, got[0].GetError()+got[1].GetError(), `"/etc/passwd" is not a store path in /nix/store`)
}

func TestKeyGeneration(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t)
	d := Deps{JS: js, Logger: slog.New(slog.DiscardHandler), Nix: testNix()}
	svc, err := New(cfg, d)
	require.NoError(t, err)
	pubFile, err := os.ReadFile(cfg.SecretKeyFile + ".pub")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(pubFile)), svc.PublicKey())
	st, err := os.Stat(cfg.SecretKeyFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// The key is kept: a second start signs with the same one.
	again, err := New(cfg, d)
	require.NoError(t, err)
	require.Equal(t, svc.PublicKey(), again.PublicKey())

	// A key others may read is refused, naming the file and the fix.
	require.NoError(t, os.Chmod(cfg.SecretKeyFile, 0o640))
	_, err = New(cfg, d)
	require.ErrorContains(t, err, "chmod go-rwx "+cfg.SecretKeyFile)
	require.NoError(t, os.Chmod(cfg.SecretKeyFile, 0o600))

	// Without generate-key a missing key is an error.
	cfg.SecretKeyFile = filepath.Join(t.TempDir(), "absent.sec")
	cfg.GenerateKey = false
	_, err = New(cfg, d)
	require.Error(t, err)
}

func TestPublicKeyParsing(t *testing.T) {
	tests := []struct{ name, content string }{
		{"no name", "AAAA"},
		{"bad base64", "k:!!!"},
		{"short key", "k:AAAA"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key")
			require.NoError(t, os.WriteFile(path, []byte(tt.content), 0o600))
			_, err := publicKey(path)
			require.Error(t, err)
		})
	}
}

// TestChangedBuildersUploadNoPastBuilds: a new set of --cache-uploader.builders
// is a new durable consumer on the runs stream, which keeps a week of
// results. It starts with the results after the uploader started: past
// builds are not uploaded again.
func TestChangedBuildersUploadNoPastBuilds(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	dep, top := buildChain(t)
	publishResult(t, js, "old", &nixbuspb.BuildResult{RunId: "rold", DrvPath: dep.drv, Builder: "b1",
		Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Outputs: map[string]string{"out": dep.out}})

	cfg := testConfig(t)
	cfg.Builders = []string{"b1", "b2"}
	start(t, srv, cfg)
	publishResult(t, js, "new", &nixbuspb.BuildResult{RunId: "rnew", DrvPath: top.drv, Builder: "b2",
		Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Outputs: map[string]string{"out": top.out}})
	drainedBy(t, js, Consumer(cfg.Builders))

	require.Len(t, uploads(t, js, "rnew"), 1)
	require.Empty(t, uploads(t, js, "rold"), "a past build was uploaded again")
}
