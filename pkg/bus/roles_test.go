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
