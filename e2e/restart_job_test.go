package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/reporter"
)

// TestRestartJobVotesAgain: a patchset whose job failed (and skipped the
// job depending on it) gets -1; the cause is fixed outside the build (a
// file the build reads, made by the test before the restart), an admin
// runs `nixbus restart <run> <attr>`, the job is rebuilt, its dependent is
// built after it, and the same patchset gets a second review, +1, once.
// `nixbus status` shows the new verdict.
func TestRestartJobVotesAgain(t *testing.T) {
	g := gerrittest.Start(t, gerrittest.Options{})
	repo := g.CreateProject(t, "demo")
	m := newMarks(t)
	fix := filepath.Join(string(m), "fix")
	ps := repo.UploadPatchset(t, 301, 1, flake(t, map[string]string{
		"flaky": "if [ -e " + fix + " ]; then echo fixed > $out; else echo flaky fails >&2; exit 1; fi",
		"after": "cat ${flaky} > $out",
	}))
	srv := natstest.Start(t)
	startWithGerrit(t, srv.URL, g)
	g.Push(ps)

	first := g.WaitReviews(t, 1)[0]
	require.Equal(t, "-1", first.Labels["Verified"], first.Raw)
	require.Contains(t, first.Message, " - flaky: build failed: ")
	require.Contains(t, first.Message, " - after: dependency flaky failed")
	id := regexp.MustCompile(`nixbus-run: (\S+)`).FindStringSubmatch(first.Message)
	require.NotNil(t, id, first.Message)
	run := id[1]

	// The cause is fixed before the restart: no wait, no race.
	require.NoError(t, os.WriteFile(fix, nil, 0o644))
	code, out, errOut := mainOut(t, "restart", "--nats.url", srv.URL, run, "flaky")
	require.Equal(t, 0, code, out+errOut)
	require.Contains(t, out, "restart of flaky in run "+run+" requested")

	reviews := g.WaitReviews(t, 2)
	second := reviews[1]
	require.Contains(t, []string{"1", "+1"}, second.Labels["Verified"], second.Raw)
	require.Equal(t, int64(301), second.Change)
	require.Equal(t, int32(1), second.Patchset, "the same patchset")
	require.Contains(t, second.Message, "The result is: SUCCESS")
	require.Contains(t, second.Message, "2 jobs: 2 built")
	require.Contains(t, second.Message, "a failed job was restarted")

	// Both jobs were built again after the restart (after for the first
	// time), once each.
	_, js := srv.Connect(t)
	var rebuilt []string
	for _, r := range natstest.Read[nixbuspb.BuildResult](t, js, bus.StreamRuns, bus.RunSubject(run, bus.RunResultKind)) {
		if r.GetRestartSeq() > 0 {
			require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, r.GetStatus())
			rebuilt = append(rebuilt, r.GetAttrs()[0])
		}
	}
	require.Equal(t, []string{"flaky", "after"}, rebuilt)

	// Once the reporter has handled everything, there were two reviews.
	require.Eventually(t, func() bool {
		c, err := js.Consumer(t.Context(), bus.StreamReports, reporter.Consumer)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 30*time.Second, 20*time.Millisecond)
	require.Len(t, g.Reviews(), 2)
	var revs []uint64
	for _, r := range natstest.Read[nixbuspb.ReviewPosted](t, js, bus.StreamReports, bus.ReviewSubject(run)) {
		revs = append(revs, r.GetVerdictRevision())
	}
	require.Len(t, revs, 2)
	require.Zero(t, revs[0])
	require.NotZero(t, revs[1])

	code, out, errOut = mainOut(t, "status", "--nats.url", srv.URL, run)
	require.Equal(t, 0, code, out+errOut)
	require.Contains(t, out, "run "+run+": SUCCESS")
}
