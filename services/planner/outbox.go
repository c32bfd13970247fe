package planner

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
)

// checkpointKey is the planner KV key holding the replay checkpoint: the
// stream sequence of NIXBUS_RUNS to read from after a restart.
const checkpointKey = "checkpoint"

// outbox publishes asynchronously and never loses a message: every publish
// is awaited in order, one that fails or is not acknowledged in time is
// published again (same message id, so JetStream keeps it once) until it is
// stored or ctx ends. Checkpoints travel through the same queue, so one is
// saved only after everything published before it is stored.
type outbox struct {
	js         jetstream.JetStream
	kv         jetstream.KeyValue
	pub        *bus.Publisher
	logger     *slog.Logger
	ackTimeout time.Duration
	metrics    *metrics
	queue      chan outItem
}

type outItem struct {
	subject string
	header  nats.Header
	data    []byte
	fut     jetstream.PubAckFuture
	// checkpoint is set (and subject empty) for a checkpoint marker.
	checkpoint uint64
}

func newOutbox(js jetstream.JetStream, kv jetstream.KeyValue, logger *slog.Logger, cfg Config, m *metrics) *outbox {
	return &outbox{
		js: js, kv: kv, pub: bus.NewPublisher(js, logger), logger: logger,
		ackTimeout: cfg.PublishAckTimeout, metrics: m, queue: make(chan outItem, cfg.PublishWindow),
	}
}

// publish starts publishing msg; it blocks only while the window is full.
func (o *outbox) publish(ctx context.Context, msg *nats.Msg) error {
	it := outItem{subject: msg.Subject, header: msg.Header, data: msg.Data}
	fut, err := o.js.PublishMsgAsync(msg)
	if err == nil {
		it.fut = fut
	}
	// On error fut stays nil and the watcher publishes synchronously.
	select {
	case o.queue <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backlogInFlight is how many unacknowledged messages the outbox may hold
// before backlogs wait: enough to keep JetStream busy, few enough that a
// message published next is stored within milliseconds.
const backlogInFlight = 512

// inFlight is how many published messages await their acknowledgement.
func (o *outbox) inFlight() int { return len(o.queue) }

// checkpoint saves seq once everything published before it is stored.
func (o *outbox) checkpoint(ctx context.Context, seq uint64) error {
	select {
	case o.queue <- outItem{checkpoint: seq}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run awaits acknowledgements in order until ctx ends or the queue closes.
func (o *outbox) run(ctx context.Context) {
	timer := time.NewTimer(o.ackTimeout)
	defer timer.Stop()
	for {
		var it outItem
		var ok bool
		select {
		case it, ok = <-o.queue:
			if !ok {
				return
			}
		case <-ctx.Done():
			return
		}
		if it.subject == "" {
			o.saveCheckpoint(ctx, it.checkpoint)
			continue
		}
		if it.fut != nil {
			timer.Reset(o.ackTimeout) // Go >= 1.23 timers: no draining needed
			select {
			case <-it.fut.Ok():
				timer.Stop()
				continue
			case err := <-it.fut.Err():
				timer.Stop()
				o.logger.Warn("publish not acknowledged", "subject", it.subject, "err", err)
			case <-timer.C:
				o.logger.Warn("publish not acknowledged in time", "subject", it.subject)
			case <-ctx.Done():
				return
			}
		}
		o.metrics.republished.Inc()
		msg := &nats.Msg{Subject: it.subject, Header: it.header, Data: it.data}
		if err := o.pub.PublishMsg(ctx, msg); err != nil {
			return // only when ctx ended
		}
	}
}

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
