package planner

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
)

// checkpointKey is the planner KV key holding the replay checkpoint: the
// stream sequence of NIXBUS_RUNS to read from after a restart.
const checkpointKey = "checkpoint"

// outbox is the planner's bus.Window: every message it emits is published
// asynchronously and never lost, and checkpoints travel through the same
// window, so one is saved only after everything published before it is
// stored.
type outbox struct {
	w      *bus.Window
	kv     jetstream.KeyValue
	logger *slog.Logger
}

func newOutbox(js jetstream.JetStream, kv jetstream.KeyValue, logger *slog.Logger, cfg Config, m *metrics) *outbox {
	return &outbox{
		w: bus.NewWindow(js, bus.WindowOptions{
			Size: cfg.PublishWindow, AckTimeout: cfg.PublishAckTimeout, Logger: logger, OnRepublish: m.republished.Inc,
		}),
		kv: kv, logger: logger,
	}
}

// publish starts publishing msg; it blocks only while the window is full.
func (o *outbox) publish(ctx context.Context, msg *nats.Msg) error { return o.w.Publish(ctx, msg) }

// backlogInFlight is how many unacknowledged messages the outbox may hold
// before backlogs wait: enough to keep JetStream busy, few enough that a
// message published next is stored within milliseconds.
const backlogInFlight = 512

// inFlight is how many published messages await their acknowledgement.
func (o *outbox) inFlight() int { return o.w.InFlight() }

// settled receives a value each time the outbox drained a little.
func (o *outbox) settled() <-chan struct{} { return o.w.Settled() }

// checkpoint saves seq once everything published before it is stored.
func (o *outbox) checkpoint(ctx context.Context, seq uint64) error {
	return o.w.After(ctx, func(ctx context.Context) { o.saveCheckpoint(ctx, seq) })
}

// run settles the window until ctx ends.
func (o *outbox) run(ctx context.Context) { o.w.Run(ctx) }

func (o *outbox) saveCheckpoint(ctx context.Context, seq uint64) {
	_ = untilDone(ctx, o.logger, "save checkpoint", func() error {
		_, err := o.kv.Put(ctx, checkpointKey, []byte(strconv.FormatUint(seq, 10)))
		return err
	})
}

// loadCheckpoint returns the sequence to resume from (0: the beginning).
func loadCheckpoint(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	e, err := kv.Get(ctx, checkpointKey)
	if bus.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	seq, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, nil // unreadable: replaying everything is always safe
	}
	return seq, nil
}
