package app

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// A follower waits out a silence longer than one of its pulls lasts (30 s
// for real, 1 s here): it pulls again, however often, until the final
// chunk. The test counts the pulls on the bus rather than waiting a time.
func TestFollowLogWaitsPastSilence(t *testing.T) {
	nc, js := natstest.Start(t).Connect(t)
	ctx := t.Context()
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamOptions{}))
	run, drv := bus.RunID("follow-test"), "/nix/store/00000000000000000000000000000000-slow.drv"
	pulls := make(chan struct{}, 64)
	sub, err := nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT."+bus.StreamLogs+".>", func(*nats.Msg) {
		select {
		case pulls <- struct{}{}:
		default:
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	chunk := func(seq int64, data string, final bool) {
		t.Helper()
		c := &nixbuspb.LogChunk{RunId: run, DrvPath: drv, Seq: seq, Data: []byte(data), Final: final, Delivery: 1}
		require.NoError(t, pub.Publish(ctx, bus.LogSubject(run, drv), run+"-"+string(rune('a'+seq)), c, nil))
	}
	chunk(0, "first\n", false)

	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- followLog(ctx, js, run, drv, &out, time.Second) }()
	// The first pull, then two more: the follower waited out two pulls'
	// worth of silence.
	for range 3 {
		select {
		case <-pulls:
		case err := <-done:
			t.Fatalf("the follower ended in the silence: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("the follower stopped pulling")
		}
	}
	chunk(1, "last\n", true)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("the follower did not end with the final chunk")
	}
	require.Equal(t, "first\nlast\n", out.String())
}
