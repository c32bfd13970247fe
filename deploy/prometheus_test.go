package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// promtoolVersion is the prometheus module `make promtool` builds
// promtool from (the Makefile's PROMTOOL).
const promtoolVersion = "v0.316.0"

// promtool is $NIXBUS_PROMTOOL, else where `make promtool` caches it. The
// test is skipped without it, except in CI (CI=true), where .ci/run
// builds it first: there a missing promtool is a failure.
func promtool(t *testing.T) string {
	t.Helper()
	path := os.Getenv("NIXBUS_PROMTOOL")
	if path == "" {
		home, err := os.UserHomeDir()
		require.NoError(t, err)
		path = filepath.Join(home, ".cache", "nixbus-tools", "bin", "promtool-"+promtoolVersion)
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool missing in CI (.ci/run runs make promtool): %v", err)
		}
		t.Skipf("promtool not built (make promtool): %v", err)
	}
	return path
}

// TestAlertRules checks deploy/prometheus/alerts.yml with promtool and
// runs its unit tests (alerts_test.yml: no builder for a system with
// queued builds, the oldest queued build too old, votes failing, a service
// absent, a target down, redeliveries growing).
func TestAlertRules(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^PROMTOOL +:= `+regexp.QuoteMeta(promtoolVersion)+`$`, string(mk), "the Makefile builds the promtool this test looks for")
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %v:\n%s", args, out)
		t.Logf("promtool %v:\n%s", args, out)
	}
}
