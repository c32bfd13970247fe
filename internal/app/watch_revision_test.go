package app

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// A run whose failed job was restarted has two verdicts: watch ends on
// the newest, with each job's newest outcome.
func TestWatchShowsTheNewestVerdict(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	run := bus.RunID("watch-revision")
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	require.NoError(t, pub.Publish(t.Context(), bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, "x"),
		&nixbuspb.Job{RunId: run, Attr: "x", DrvPath: "/nix/store/00000000000000000000000000000000-x.drv", System: "x86_64-linux"}, nil))
	for _, rev := range []uint64{0, 5} {
		o := &nixbuspb.JobOutcome{RunId: run, Attr: "x", System: "x86_64-linux", Status: nixbuspb.JobStatus_JOB_STATUS_FAILED, Reason: "exit 1"}
		v := &nixbuspb.RunVerdict{RunId: run, Status: nixbuspb.RunStatus_RUN_STATUS_FAILED, JobCount: 1, Revision: rev}
		if rev > 0 {
			o.Status, o.Reason = nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, ""
			v.Status = nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED
		}
		require.NoError(t, pub.Publish(t.Context(), bus.OutcomeSubject(run), bus.MsgIDOutcomeRevision(run, "x", rev), o, nil))
		require.NoError(t, pub.Publish(t.Context(), bus.VerdictSubject(run), bus.MsgIDVerdictRevision(run, rev), v, nil))
	}
	var out bytes.Buffer
	v, err := watchRun(t.Context(), js, run, &out, false)
	require.NoError(t, err)
	require.Equal(t, uint64(5), v.GetRevision())
	require.Contains(t, out.String(), "verdict: SUCCESS (1 jobs)")
	require.NotContains(t, out.String(), "exit 1")
}
