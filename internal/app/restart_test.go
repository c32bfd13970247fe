package app

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestRestartRequestFindsTheJob(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	run := bus.RunID("restart-cli")
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	for _, j := range []*nixbuspb.Job{
		{RunId: run, Attr: "ok", DrvPath: "/nix/store/00000000000000000000000000000000-ok.drv"},
		{RunId: run, Attr: "broken", DrvPath: "/nix/store/11111111111111111111111111111111-broken.drv"},
		{RunId: run, Attr: "eval-error", EvalError: "boom"},
	} {
		require.NoError(t, pub.Publish(t.Context(), bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, j.Attr), j, nil))
	}
	m, err := restartRequest(t.Context(), js, run, "broken")
	require.NoError(t, err)
	require.Equal(t, "/nix/store/11111111111111111111111111111111-broken.drv", m.GetDrvPath())
	require.Equal(t, run, m.GetRunId())

	gone := bus.RunID("restart-cli-cancelled")
	require.NoError(t, pub.Publish(t.Context(), bus.RunSubject(gone, bus.RunJobKind), bus.MsgIDJob(gone, "broken"),
		&nixbuspb.Job{RunId: gone, Attr: "broken", DrvPath: "/nix/store/11111111111111111111111111111111-broken.drv"}, nil))
	require.NoError(t, pub.Publish(t.Context(), bus.RunSubject(gone, bus.RunCancelKind), bus.MsgIDCancel(gone),
		&nixbuspb.Cancel{RunId: gone, Reason: "superseded"}, nil))

	for _, tc := range []struct{ run, attr string }{
		{gone, "broken"}, // cancelled: nothing would build it
		{run, "missing"},
		{run, "eval-error"}, // no derivation to build
		{"r..>", "broken"},  // not a run id: never put in a subject
	} {
		_, err := restartRequest(t.Context(), js, tc.run, tc.attr)
		require.Error(t, err, "%s %s", tc.run, tc.attr)
	}
}
