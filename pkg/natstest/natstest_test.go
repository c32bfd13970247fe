package natstest_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/pkg/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

// A stopped server started again has its streams back on the same URL,
// and a client connected before the outage carries on with it.
func TestStartAgainKeepsStateAndClients(t *testing.T) {
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	ctx := t.Context()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "s.one", []byte("before"))
	require.NoError(t, err)
	url := srv.URL

	srv.Stop()
	require.Eventually(t, func() bool { return !nc.IsConnected() }, 10*time.Second, 10*time.Millisecond)
	srv.StartAgain(t)
	require.Equal(t, url, srv.ClientURL())
	require.Eventually(t, nc.IsConnected, 10*time.Second, 10*time.Millisecond)

	_, err = js.Publish(ctx, "s.two", []byte("after"))
	require.NoError(t, err)
	stream, err := js.Stream(ctx, "S")
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, info.State.Msgs)
}
