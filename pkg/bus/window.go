package bus

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WindowOptions configure a Window.
type WindowOptions struct {
	// Size bounds the messages awaiting their acknowledgement; Publish
	// blocks while that many are in flight. At least 1.
	Size int
	// AckTimeout is how long an acknowledgement is awaited before the
	// message is published again.
	AckTimeout time.Duration
	Logger     *slog.Logger
	// OnRepublish, when set, is called for each message published again
	// (a metric).
	OnRepublish func()
}

// Window publishes asynchronously and never loses a message: every
// acknowledgement is awaited in order, and a message that failed or was
// not acknowledged in time is published again, synchronously and with
// retries (its message id makes the repeat harmless), before anything
// after it counts as stored. Markers (After, Flush) travel in the same
// queue, so a marker's effect happens only once everything published
// before it is stored: "evaluation done" after its jobs, a replay
// checkpoint after what it covers.
//
// Run must be running while the window is used.
type Window struct {
	js      jetstream.JetStream
	pub     *Publisher
	o       WindowOptions
	queue   chan windowItem
	settled chan struct{}
	// pending counts items put and not yet settled (the queue's length
	// misses the one Run is settling).
	pending atomic.Int64
}

type windowItem struct {
	msg *nats.Msg
	fut jetstream.PubAckFuture
	// after is set (and msg nil) for a marker.
	after func(context.Context)
}

// NewWindow returns a window publishing on js.
func NewWindow(js jetstream.JetStream, o WindowOptions) *Window {
	o.Size = max(o.Size, 1)
	if o.AckTimeout <= 0 {
		o.AckTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Window{
		js: js, pub: NewPublisher(js, o.Logger), o: o,
		queue: make(chan windowItem, o.Size), settled: make(chan struct{}, 1),
	}
}

// Publish starts publishing msg; it blocks only while the window is full.
func (w *Window) Publish(ctx context.Context, msg *nats.Msg) error {
	it := windowItem{msg: msg}
	if fut, err := w.js.PublishMsgAsync(msg); err == nil {
		it.fut = fut
	} // else fut stays nil and Run publishes it synchronously
	return w.put(ctx, it)
}

// After runs f (on Run's goroutine, with Run's context) once everything
// published before this call is stored.
func (w *Window) After(ctx context.Context, f func(context.Context)) error {
	return w.put(ctx, windowItem{after: f})
}

// Flush waits until everything published before it is stored.
func (w *Window) Flush(ctx context.Context) error {
	done := make(chan struct{})
	if err := w.After(ctx, func(context.Context) { close(done) }); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Window) put(ctx context.Context, it windowItem) error {
	w.pending.Add(1)
	select {
	case w.queue <- it:
		return nil
	case <-ctx.Done():
		w.pending.Add(-1)
		return ctx.Err()
	}
}

// InFlight is how many messages and markers await settling.
func (w *Window) InFlight() int { return int(w.pending.Load()) }

// Settled receives a value after a message or marker was settled: a
// caller that waits for InFlight to drop waits on it instead of polling.
func (w *Window) Settled() <-chan struct{} { return w.settled }

// Run settles the queue in order until ctx ends.
func (w *Window) Run(ctx context.Context) {
	timer := time.NewTimer(w.o.AckTimeout)
	defer timer.Stop()
	for {
		var it windowItem
		select {
		case it = <-w.queue:
		case <-ctx.Done():
			return
		}
		if !w.settle(ctx, it, timer) {
			return
		}
		w.pending.Add(-1)
		select {
		case w.settled <- struct{}{}:
		default:
		}
	}
}

// settle waits for it to be stored, publishing again if needed; false
// when ctx ended first.
func (w *Window) settle(ctx context.Context, it windowItem, timer *time.Timer) bool {
	if it.msg == nil {
		it.after(ctx)
		return ctx.Err() == nil
	}
	if it.fut != nil {
		timer.Reset(w.o.AckTimeout) // Go >= 1.23 timers: no draining needed
		select {
		case <-it.fut.Ok():
			timer.Stop()
			return true
		case err := <-it.fut.Err():
			timer.Stop()
			w.o.Logger.Warn("publish not acknowledged", "subject", it.msg.Subject, "err", err)
		case <-timer.C:
			w.o.Logger.Warn("publish not acknowledged in time", "subject", it.msg.Subject)
		case <-ctx.Done():
			return false
		}
	}
	if w.o.OnRepublish != nil {
		w.o.OnRepublish()
	}
	// PublishMsg retries until stored; it fails only when ctx ended.
	return w.pub.PublishMsg(ctx, it.msg) == nil
}
