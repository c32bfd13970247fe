package bus_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
)

// runWindow runs w until the test ends.
func runWindow(t *testing.T, w *bus.Window) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func msg(subject string, i int) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("id-%d", i))
	m.Data = []byte(fmt.Sprint(i))
	return m
}

func stored(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.Msgs
}

// Markers run only once everything before them is stored, and the window
// never holds more than its size.
func TestWindowMarkersAfterMessages(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}})
	require.NoError(t, err)
	w := bus.NewWindow(js, bus.WindowOptions{Size: 8, AckTimeout: 10 * time.Second})
	runWindow(t, w)

	var seen []uint64
	for i := range 1000 {
		require.NoError(t, w.Publish(t.Context(), msg("w.x", i)))
		require.LessOrEqual(t, w.InFlight(), 8+1, "the queue plus the one being settled")
		if i%250 == 249 {
			require.NoError(t, w.After(t.Context(), func(context.Context) { seen = append(seen, stored(t, js, "W")) }))
		}
	}
	require.NoError(t, w.Flush(t.Context()))
	require.Equal(t, uint64(1000), stored(t, js, "W"))
	// The markers ran in order, each after at least the messages before it.
	require.Len(t, seen, 4)
	for i, n := range seen {
		require.GreaterOrEqual(t, n, uint64(250*(i+1)), "marker %d ran before its messages were stored", i)
	}
}

// A message that is not acknowledged (no stream yet) is published again
// until it is stored, before anything after it counts as settled.
func TestWindowRepublishes(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	var republished atomic.Int32
	first := make(chan struct{})
	w := bus.NewWindow(js, bus.WindowOptions{Size: 4, AckTimeout: time.Second, OnRepublish: func() {
		if republished.Add(1) == 1 {
			close(first)
		}
	}})
	runWindow(t, w)
	for i := range 3 {
		require.NoError(t, w.Publish(t.Context(), msg("late.x", i)))
	}
	select {
	case <-first:
	case <-t.Context().Done():
		t.Fatal("no republish")
	}
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}})
	require.NoError(t, err)
	require.NoError(t, w.Flush(t.Context()))
	require.Equal(t, uint64(3), stored(t, js, "LATE"), "every message stored once")
	require.GreaterOrEqual(t, republished.Load(), int32(1))
}

// Settled wakes a waiter each time the window drains a little, so nobody
// polls InFlight.
func TestWindowSettled(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	require.NoError(t, err)
	w := bus.NewWindow(js, bus.WindowOptions{Size: 2})
	require.NoError(t, w.Publish(t.Context(), msg("s.x", 1)))
	require.NoError(t, w.Publish(t.Context(), msg("s.x", 2)))
	require.Equal(t, 2, w.InFlight(), "nothing settles before Run")
	runWindow(t, w)
	for w.InFlight() > 0 {
		select {
		case <-w.Settled():
		case <-t.Context().Done():
			t.Fatal("never settled")
		}
	}
	require.Equal(t, uint64(2), stored(t, js, "S"))
}
