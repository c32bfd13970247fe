package bus_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// A message whose handler finished is acknowledged even when shutdown
// began while it ran: it is never handled twice (a rebuild for a builder).
func TestWorkAcksHandledMessageAfterShutdownBegan(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	require.NoError(t, pub.Publish(t.Context(), bus.ChangeSubject("p"), "one", &nixbuspb.ChangeEvent{EventId: "one"}, nil))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	handled := make(chan struct{}, 2)
	o := bus.WorkOptions{Stream: bus.StreamChanges, Durable: "ack-test", Filter: bus.ChangeAll, FetchWait: 100 * time.Millisecond, AckWait: 2 * time.Second}
	done := make(chan error, 1)
	go func() {
		done <- bus.Work(ctx, js, o, slog.New(slog.DiscardHandler), func(hctx context.Context, msg jetstream.Msg) error {
			handled <- struct{}{}
			// Shutdown begins while the effect is being made durable.
			cancel()
			<-hctx.Done()
			return nil
		})
	}()
	<-handled
	require.NoError(t, <-done)

	cons, err := js.Consumer(t.Context(), bus.StreamChanges, "ack-test")
	require.NoError(t, err)
	info, err := cons.Info(t.Context())
	require.NoError(t, err)
	require.Zero(t, info.NumAckPending, "the handled message is acknowledged")
	require.Zero(t, info.NumPending)
	require.EqualValues(t, 1, info.AckFloor.Consumer)
}
