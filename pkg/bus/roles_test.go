package bus_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
)

// A role gets the KV subjects of the buckets its service owns and of no
// other, and its durables' API and ack subjects.
func TestAccessPermissions(t *testing.T) {
	own := bus.Access{
		Consumes:  []bus.Durable{{Stream: bus.StreamRuns, Name: "mine"}},
		Buckets:   []bus.Bucket{{Name: "mine-kv"}},
		Publishes: []string{bus.UploadAll},
	}.Permissions("svc")
	require.Subset(t, own.Publish, []string{
		"$JS.API.STREAM.INFO.KV_mine-kv", "$JS.API.STREAM.CREATE.KV_mine-kv", "$KV.mine-kv.>",
		"$JS.API.STREAM.INFO." + bus.StreamRuns, "$JS.API.CONSUMER.MSG.NEXT." + bus.StreamRuns + ".mine",
		"$JS.ACK." + bus.StreamRuns + ".mine.>", bus.UploadAll,
	})
	require.Equal(t, []string{"_INBOX.svc.>"}, own.Subscribe)

	other := bus.Access{Publishes: []string{bus.UploadAll}}.Permissions("other")
	for _, s := range other.Publish {
		require.NotContains(t, s, "mine", "a role reaches another service's state")
		require.NotContains(t, s, "$O.", "no log store use declared")
	}
	require.NotContains(t, other.Publish, "$JS.API.STREAM.INFO.KV_mine-kv")
}

// Each other kind of use gives its subjects, and only its own: a watched
// bucket its watcher's push consumer with flow control, inspected streams
// their durables' info, and the log store its writes to a writer only.
func TestAccessUses(t *testing.T) {
	logs := "OBJ_" + bus.LogBucket
	for _, tc := range []struct {
		name      string
		a         bus.Access
		want, not []string
	}{
		{"watched bucket", bus.Access{Buckets: []bus.Bucket{{Name: "w", Watched: true}}},
			[]string{"$JS.API.CONSUMER.CREATE.KV_w", "$JS.FC.KV_w.>"}, nil},
		{"unwatched bucket", bus.Access{Buckets: []bus.Bucket{{Name: "w"}}},
			[]string{"$KV.w.>"}, []string{"$JS.API.CONSUMER.CREATE.KV_w", "$JS.FC.KV_w.>"}},
		{"inspects", bus.Access{Inspects: []string{bus.StreamBuilds}},
			[]string{"$JS.API.CONSUMER.INFO." + bus.StreamBuilds + ".*"}, []string{"$JS.API.CONSUMER.MSG.NEXT." + bus.StreamBuilds + ".*"}},
		{"reads logs", bus.Access{Logs: bus.ReadsLogs},
			[]string{"$JS.API.CONSUMER.CREATE." + logs, "$JS.FC." + logs + ".>"}, []string{"$O." + bus.LogBucket + ".>", "$JS.API.STREAM.PURGE." + logs}},
		{"writes logs", bus.Access{Logs: bus.WritesLogs},
			[]string{"$O." + bus.LogBucket + ".>", "$JS.API.STREAM.PURGE." + logs}, nil},
		{"no logs", bus.Access{},
			nil, []string{"$JS.API.CONSUMER.CREATE." + logs, "$O." + bus.LogBucket + ".>"}},
	} {
		p := tc.a.Permissions("svc")
		require.Subset(t, p.Publish, tc.want, tc.name)
		for _, s := range tc.not {
			require.NotContains(t, p.Publish, s, tc.name)
		}
	}
}
