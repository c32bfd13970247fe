package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/retry"
)

// WorkOptions describe a durable pull consumer shared by every process of a
// service, and how one process works through it.
type WorkOptions struct {
	Stream  string
	Durable string
	Filter  string
	// Concurrency is how many messages this process handles at once. It
	// only pulls a message when a slot is free, so a busy process never
	// hoards work another could do.
	Concurrency int
	// AckWait is how long a message may go without a heartbeat before
	// JetStream hands it to another process. Handlers are kept alive with
	// heartbeats every AckWait/3, however long they run.
	AckWait time.Duration
	// MaxDeliver bounds redeliveries of one message (-1: unbounded).
	MaxDeliver int
	// RetryDelay is how long a message waits after a handler error.
	RetryDelay time.Duration
	// FetchWait bounds one pull request.
	FetchWait time.Duration
	// StartTime is where a new durable starts on a stream that keeps
	// history (NIXBUS_RUNS, NIXBUS_REPORTS): messages stored from then on,
	// not a week of past runs. Services pass the time they were made, so a
	// consumer turned on or renamed (--reporter.started-message,
	// --cache-uploader.builders) acts on new runs only. Zero: everything,
	// as a work queue wants.
	StartTime time.Time
	// Tracer, when set, gives each handler a consumer span named SpanName
	// (default "process <Durable>"), the child of the span context in the
	// message's headers, and ends it failed when the handler fails.
	// Handlers add their attributes to trace.SpanFromContext(ctx). With no
	// Tracer the handler's ctx still carries the message's span context, so
	// what it publishes stays in the trace.
	Tracer   trace.Tracer
	SpanName string
}

func (o *WorkOptions) defaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxDeliver == 0 {
		o.MaxDeliver = -1
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.FetchWait <= 0 {
		o.FetchWait = 5 * time.Second
	}
	if o.SpanName == "" {
		o.SpanName = "process " + o.Durable
	}
}

// Handler acts on one message. Returning nil acks it: return only once the
// effect is durable. An error naks it for a later retry, unless it is
// wrapped with Permanent, which terminates the message (it can never work).
type Handler func(ctx context.Context, msg jetstream.Msg) error

// Permanent marks err as one no retry can fix (a malformed message): the
// message is terminated instead of redelivered. It is retry.Permanent.
func Permanent(err error) error { return retry.Permanent(err) }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool { return retry.IsPermanent(err) }

type applyKey struct{}

// WithApplySettings marks ctx as the operator's asking (the
// --nats.apply-stream-config flag) that consumers take this process's
// settings when they differ. Without it they are only checked.
func WithApplySettings(ctx context.Context) context.Context {
	return context.WithValue(ctx, applyKey{}, true)
}

func applySettings(ctx context.Context) bool {
	v, _ := ctx.Value(applyKey{}).(bool)
	return v
}

// EnsureConsumer creates the durable consumer o describes, or binds to it
// when it exists. Its settings change only when the ctx says the operator
// asked for it (WithApplySettings); otherwise a difference is logged and
// the consumer is used as it is.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, o WorkOptions) (jetstream.Consumer, error) {
	return ensureConsumer(ctx, js, o, slog.Default())
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, o WorkOptions, logger *slog.Logger) (jetstream.Consumer, error) {
	o.defaults()
	cc := jetstream.ConsumerConfig{
		Durable:       o.Durable,
		FilterSubject: o.Filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if !o.StartTime.IsZero() {
		t := o.StartTime
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	c, err := js.Consumer(ctx, o.Stream, o.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = js.CreateConsumer(ctx, o.Stream, cc)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			// Another process of the service made it meanwhile.
			c, err = js.Consumer(ctx, o.Stream, o.Durable)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s on %s: %w", o.Durable, o.Stream, err)
	}
	have := c.CachedInfo().Config
	var diffs []string
	if have.AckWait != cc.AckWait {
		diffs = append(diffs, fmt.Sprintf("ack wait %s, want %s", have.AckWait, cc.AckWait))
	}
	if have.MaxDeliver != cc.MaxDeliver {
		diffs = append(diffs, fmt.Sprintf("max deliver %d, want %d", have.MaxDeliver, cc.MaxDeliver))
	}
	apply := len(diffs) > 0 && applySettings(ctx)
	if len(diffs) > 0 && !apply {
		logger.Warn("consumer settings differ from this process's flags; keeping them (apply with --nats.apply-stream-config)",
			"stream", o.Stream, "consumer", o.Durable, "differences", diffs)
		cc.AckWait, cc.MaxDeliver = have.AckWait, have.MaxDeliver
	}
	// What it filters is nixbus's, not a setting: a new version's filter
	// always wins.
	if !apply && have.FilterSubject == cc.FilterSubject {
		return c, nil
	}
	// Where it starts cannot change: it keeps its place.
	cc.DeliverPolicy, cc.OptStartTime, cc.OptStartSeq = have.DeliverPolicy, have.OptStartTime, have.OptStartSeq
	if c, err = js.UpdateConsumer(ctx, o.Stream, cc); err != nil {
		return nil, fmt.Errorf("update consumer %s on %s: %w", o.Durable, o.Stream, err)
	}
	logger.Info("consumer updated", "stream", o.Stream, "consumer", o.Durable, "filter", cc.FilterSubject, "applied", apply)
	return c, nil
}

// Work pulls from the durable consumer and runs h on each message with up to
// o.Concurrency at once, until ctx ends. It returns nil then, after every
// handler it started has returned.
func Work(ctx context.Context, js jetstream.JetStream, o WorkOptions, logger *slog.Logger, h Handler) error {
	o.defaults()
	cons, err := ensureConsumer(ctx, js, o, logger)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: not a failure
		}
		return err
	}
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pullLoop(ctx, cons, o, logger, h)
		}()
	}
	wg.Wait()
	return nil
}

func pullLoop(ctx context.Context, cons jetstream.Consumer, o WorkOptions, logger *slog.Logger, h Handler) {
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, o.FetchWait)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return
			}
			logger.Warn("fetch", "consumer", o.Durable, "err", err)
			_ = backoff.Wait(ctx)
			continue
		}
		for msg := range batch.Messages() {
			handle(ctx, msg, o, logger, h)
		}
		cancel()
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) &&
			!errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			logger.Warn("fetch batch", "consumer", o.Durable, "err", err)
			_ = backoff.Wait(ctx)
			continue
		}
		backoff.Reset()
	}
}

// ackTimeout bounds the acknowledgement of a handled message, which runs
// on a context detached from the service's.
const ackTimeout = 10 * time.Second

func handle(ctx context.Context, msg jetstream.Msg, o WorkOptions, logger *slog.Logger, h Handler) {
	hctx, stop := context.WithCancel(ctx)
	hctx, span := StartSpan(hctx, o.Tracer, o.SpanName, msg, semconv.MessagingConsumerGroupName(o.Durable))
	// The span ends once the message is settled, so it covers the ack.
	var err error
	defer func() { EndSpan(span, err) }()
	done := make(chan struct{})
	go func() {
		// Heartbeats keep a long build from being handed to another process.
		t := time.NewTicker(o.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					logger.Warn("heartbeat", "subject", msg.Subject(), "err", err)
				}
			}
		}
	}()
	err = h(hctx, msg)
	close(done)
	stop()
	switch {
	case err == nil:
		// The effect is done: acknowledge it even when shutdown has begun
		// (ctx ended), or the message would be handled again.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
		aerr := msg.DoubleAck(actx)
		cancel()
		if aerr != nil {
			logger.Warn("ack", "subject", msg.Subject(), "err", aerr)
			span.AddEvent("ack failed", trace.WithAttributes(attribute.String("error", aerr.Error())))
		}
	case IsPermanent(err):
		logger.Error("drop message", "subject", msg.Subject(), "err", err)
		if terr := msg.TermWithReason(err.Error()); terr != nil {
			logger.Warn("term", "subject", msg.Subject(), "err", terr)
		}
	default:
		if ctx.Err() == nil {
			logger.Warn("handle", "subject", msg.Subject(), "err", err)
		}
		if nerr := msg.NakWithDelay(o.RetryDelay); nerr != nil {
			logger.Warn("nak", "subject", msg.Subject(), "err", nerr)
		}
	}
}
