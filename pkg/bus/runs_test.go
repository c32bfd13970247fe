package bus_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestLastVerdict: the newest of a run's verdicts (a restart's revision
// after the first), none for a run without one, and none for one that
// does not decode.
func TestLastVerdict(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamOptions{}))
	reports, err := js.Stream(ctx, bus.StreamReports)
	require.NoError(t, err)
	publish := func(runID string, data []byte) {
		_, err := js.Publish(ctx, bus.VerdictSubject(runID), data)
		require.NoError(t, err)
	}
	for _, rev := range []uint64{0, 7} {
		data, err := bus.Encode(&nixbuspb.RunVerdict{RunId: "r1", Revision: rev})
		require.NoError(t, err)
		publish("r1", data)
	}
	publish("r2", []byte{0xff})

	var v nixbuspb.RunVerdict
	found, err := bus.LastVerdict(ctx, reports, "r1", &v)
	require.NoError(t, err)
	require.True(t, found)
	require.EqualValues(t, 7, v.GetRevision())
	for _, runID := range []string{"r2", "r3"} {
		found, err := bus.LastVerdict(ctx, reports, runID, &nixbuspb.RunVerdict{})
		require.NoError(t, err, runID)
		require.False(t, found, runID)
	}
}
