package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestFailedBuildNotBuiltAgain runs the example flake twice with real Nix:
// the second run builds nothing (what succeeded is in the binary cache,
// what failed is in the planner's failed-build cache), and its review
// links the first failure's log for the failed job and the job it skipped
// (issue 11, "Failed-build cache").
func TestFailedBuildNotBuiltAgain(t *testing.T) {
	srv := natstest.Start(t)
	startInstances(t, srv.URL, t.TempDir(), nil)
	dir := saltedExample(t)

	first, js := follow(t, srv, dir)
	var firstLog string
	for _, o := range first.Outcomes {
		if o.GetAttr() == "broken" {
			require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_BUILD, o.GetFailure())
			firstLog = o.GetLogKey()
		}
	}
	require.NotEmpty(t, firstLog)

	second, _ := follow(t, srv, dir)
	require.NotEqual(t, first.RunID, second.RunID)
	require.Empty(t, buildResults(t, js, second.RunID), "nothing was built again")
	outcomes := map[string]*nixbuspb.JobOutcome{}
	for _, o := range second.Outcomes {
		outcomes[o.GetAttr()] = o
	}
	broken := outcomes["broken"]
	require.Equal(t, nixbuspb.JobStatus_JOB_STATUS_FAILED, broken.GetStatus())
	require.Equal(t, nixbuspb.FailureKind_FAILURE_KIND_CACHED, broken.GetFailure())
	require.Equal(t, firstLog, broken.GetLogKey())
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, second.Verdict.GetStatus())
	require.EqualValues(t, 5, second.Verdict.GetCachedCount())

	msg := second.Review.GetMessage()
	link := "(see http://ci.example/logs/" + firstLog + ")\n"
	require.Regexp(t, `\n - broken: failed in an earlier build \(cached failure\): builder for '[^']*-broken\.drv' failed with exit code 1 `, msg)
	require.Contains(t, msg, "broken.drv' failed with exit code 1 "+link)
	require.Contains(t, msg, " - after-broken: dependency broken failed "+link)

	// The link is the first build's log.
	logs, err := js.ObjectStore(t.Context(), bus.LogBucket)
	require.NoError(t, err)
	text, err := logs.GetBytes(t.Context(), firstLog)
	require.NoError(t, err)
	require.Contains(t, string(text), "this job fails on purpose")
}
