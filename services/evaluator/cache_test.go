package evaluator

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestCachedFromHTTPSCache: "cached" comes from the binary cache served
// over HTTPS (trusted through the CA file), and a cache that does not
// answer is counted, not silently taken as empty.
func TestCachedFromHTTPSCache(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	dir := exampleFlake(t)
	cacheDir := t.TempDir()
	good := httptest.NewTLSServer(http.FileServer(http.Dir(cacheDir)))
	t.Cleanup(good.Close)
	broken := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(broken.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good.Certificate().Raw}), 0o644))

	evaluate := func(t *testing.T, url string) (runMsgs, *Service) {
		t.Helper()
		cfg := testConfig(t)
		cfg.CacheURL, cfg.S3.CAFile = url, ca
		s := start(t, js, cfg, Deps{})
		ev := &nixbuspb.ChangeEvent{EventId: t.Name(), Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: "example", LocalPath: dir}
		publishEvent(t, js, ev, bus.MsgIDChange(ev.EventId))
		r := waitEvaluated(t, js, bus.RunID(ev.EventId))
		requireOneRun(t, r)
		return r, s
	}
	paths := func(s *Service, result string) float64 {
		return testutil.ToFloat64(s.cache.paths.WithLabelValues(result))
	}

	var chain1 *nixbuspb.Job
	t.Run("cache not answering", func(t *testing.T) {
		r, s := evaluate(t, broken.URL)
		requireExampleJobs(t, r, bus.RunID(t.Name()))
		chain1 = r.jobs["chain1"]
		require.Positive(t, paths(s, "error"), "every path the cache did not answer for is counted")
		require.Zero(t, paths(s, "cached"))
	})
	_, err := testNix().Output(t.Context(), []string{"build"}, "--no-link", chain1.DrvPath)
	require.NoError(t, err)
	_, err = testNix().Output(t.Context(), []string{"copy"}, "--to", "file://"+cacheDir, chain1.Outputs["out"])
	require.NoError(t, err)

	t.Run("in the cache", func(t *testing.T) {
		r, s := evaluate(t, good.URL)
		requireExampleJobs(t, r, bus.RunID(t.Name()), "chain1")
		require.Equal(t, 1.0, paths(s, "cached"))
		require.Zero(t, paths(s, "error"))
	})
}
