package builder

import (
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestNarrowRetry: a build SIGKILLed from outside (as the OOM killer does)
// is built again, at most --builder.max-retries times; a build's own
// failure, even one printing nix's words for a transient failure, is
// built once (issue 11, "Narrow retry").
func TestNarrowRetry(t *testing.T) {
	system := currentSystem(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t, system, "b1")
	cfg.MaxRetries = 2
	b := startBuilder(t, srv, cfg)

	dir := markerDir(t)
	killed, broken, forged := sharedFile(t, dir, "killed"), sharedFile(t, dir, "broken"), sharedFile(t, dir, "forged")
	drvs := derivations(t, map[string]string{
		"killed": `echo attempt >> ` + killed + `; kill -9 $$`,
		"broken": `echo attempt >> ` + broken + `; exit 1`,
		"forged": `echo attempt >> ` + forged + `; echo "error: unable to download 'http://x': Couldn't connect to server (7)"; echo "note: build failure may have been caused by lack of free disk space"; exit 1`,
	})
	run := "rretry"
	for _, drv := range drvs {
		request(t, js, run, system, drv)
	}
	got := waitResults(t, js, run, len(drvs))
	for name, attempts := range map[string]int{"killed": 3, "broken": 1, "forged": 1} {
		res := got[drvs[name]]
		require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_FAILED, res.GetStatus(), name)
		require.Len(t, lines(map[string]string{"killed": killed, "broken": broken, "forged": forged}[name]), attempts, name)
	}
	require.Contains(t, got[drvs["killed"]].GetError(), "failed due to signal 9 (Killed)")
	// The result says which failure was the infrastructure's, so that the
	// planner's failed-build cache keeps only the builds' own.
	require.NotEmpty(t, got[drvs["killed"]].GetTransient())
	require.Empty(t, got[drvs["broken"]].GetTransient())
	require.Empty(t, got[drvs["forged"]].GetTransient())
	require.Equal(t, 2.0, b.counter(t, "nixbus_builder_retries_total"))
}
