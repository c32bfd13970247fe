package prom

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/reflect/protoreflect"

	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

func TestEnumLabel(t *testing.T) {
	for _, tc := range []struct {
		in   protoreflect.Enum
		want string
	}{
		{nixbuspb.RunStatus_RUN_STATUS_FAILED, "failed"},
		{nixbuspb.JobStatus_JOB_STATUS_CACHED, "cached"},
		{nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT, "timed-out"},
		{nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, "patchset-created"},
		{nixbuspb.FailureKind_FAILURE_KIND_DEPENDENCY, "dependency"},
		{nixbuspb.RunStatus(42), "unknown"},
	} {
		require.Equal(t, tc.want, EnumLabel(tc.in), "%v", tc.in)
	}
	require.Equal(t, []string{"succeeded", "failed", "cancelled"}, EnumLabels(nixbuspb.RunStatus(0)))
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(BuildInfo())
	require.Equal(t, 1, testutil.CollectAndCount(reg, "nixbus_build_info"))
	fams, err := reg.Gather()
	require.NoError(t, err)
	m := fams[0].GetMetric()[0]
	require.Equal(t, 1.0, m.GetGauge().GetValue())
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	require.True(t, strings.HasPrefix(labels["goversion"], "go"), "%v", labels)
	require.NotEmpty(t, labels["version"])
	require.NotEmpty(t, labels["revision"])
}

// TestConsumers reports what JetStream says of a durable consumer, and
// up 0 for one that does not exist (Check says which).
func TestConsumers(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	require.NoError(t, err)
	cons, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	require.NoError(t, err)
	publish := func() {
		_, err := js.Publish(ctx, "s.x", []byte("m"))
		require.NoError(t, err)
	}
	// One message delivered twice (not acknowledged), two never delivered.
	publish()
	fetch := func() jetstream.Msg {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		msg := <-batch.Messages()
		require.NotNil(t, msg)
		return msg
	}
	require.NoError(t, fetch().Nak())
	meta, err := fetch().Metadata()
	require.NoError(t, err)
	require.EqualValues(t, 2, meta.NumDelivered)
	publish()
	publish()

	c := NewConsumers(5 * time.Second)
	c.Add(Consumer{JS: js, Stream: "S", Durable: "d"}, Consumer{JS: js, Stream: "S", Durable: "missing"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP nixbus_jetstream_consumer_ack_pending_messages Messages the durable consumer delivered and no process acknowledged yet.
# TYPE nixbus_jetstream_consumer_ack_pending_messages gauge
nixbus_jetstream_consumer_ack_pending_messages{consumer="d",stream="S"} 1
# HELP nixbus_jetstream_consumer_pending_messages Messages of the stream the durable consumer has not delivered yet.
# TYPE nixbus_jetstream_consumer_pending_messages gauge
nixbus_jetstream_consumer_pending_messages{consumer="d",stream="S"} 2
# HELP nixbus_jetstream_consumer_redelivered_messages Unacknowledged messages the durable consumer delivered more than once.
# TYPE nixbus_jetstream_consumer_redelivered_messages gauge
nixbus_jetstream_consumer_redelivered_messages{consumer="d",stream="S"} 1
# HELP nixbus_jetstream_consumer_up 1 when JetStream answered about the durable consumer on this scrape, 0 when it did not in time or it does not exist.
# TYPE nixbus_jetstream_consumer_up gauge
nixbus_jetstream_consumer_up{consumer="d",stream="S"} 1
nixbus_jetstream_consumer_up{consumer="missing",stream="S"} 0
`)))
	require.ErrorContains(t, c.Check(ctx), "consumer missing on S")
}
