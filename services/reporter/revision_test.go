package reporter

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestNewsOfARevision: a revision's verdict is news unless a later
// revision is stored (it will be reviewed instead, whichever a reporter
// handles first), a later one was reviewed, or it says what the run's last
// review said. The service test delivers revisions one at a time, so only
// this one sees a later verdict stored before an earlier one is handled.
func TestNewsOfARevision(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamOptions{}, votesBucket))
	votes, err := js.KeyValue(ctx, VotesBucket)
	require.NoError(t, err)
	s, err := New(Config{FailedListLimit: 10, AckWait: time.Minute, RetryDelay: time.Second, StaleClaim: time.Minute, Tag: "t"}, Deps{JS: js, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	h := &handler{s: s, votes: votes}
	verdict := func(rev uint64) *nixbuspb.RunVerdict {
		v := &nixbuspb.RunVerdict{RunId: "r1", Revision: rev}
		publishVerdict(t, js, v, bus.MsgIDVerdictRevision("r1", rev))
		return v
	}
	v0, v3 := verdict(0), verdict(3)
	require.NoError(t, h.remember(ctx, "r1", v0.GetRevision(), "first"))

	for _, tc := range []struct {
		name string
		v    *nixbuspb.RunVerdict
		sum  string
		news bool
	}{
		{"a new summary", v3, "second", true},
		{"the last review's summary", v3, "first", false},
	} {
		news, why, err := h.news(ctx, tc.v, tc.sum)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.news, news, "%s: %s", tc.name, why)
	}
	// The unchanged revision 3 was recorded as the run's last review.
	news, why, err := h.news(ctx, v3, "second")
	require.NoError(t, err)
	require.False(t, news, why)

	v4 := verdict(4)
	v5 := verdict(5) // stored before revision 4 is handled
	news, why, err = h.news(ctx, v4, "third")
	require.NoError(t, err)
	require.False(t, news, "a later revision is stored: %s", why)
	require.Contains(t, why, "later verdict of the run will be reported")
	news, _, err = h.news(ctx, v5, "third")
	require.NoError(t, err)
	require.True(t, news)
}
