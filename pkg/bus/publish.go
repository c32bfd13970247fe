package bus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/printable"
	"nixbus.dev/nixbus/pkg/retry"
)

// Publisher publishes protobuf messages with a message id, retrying through
// NATS outages until the stream has the message or ctx ends. Because every
// message carries an id, a retry never stores a message twice.
type Publisher struct {
	js     jetstream.JetStream
	logger *slog.Logger
	// Backoff bounds for retries.
	MinBackoff, MaxBackoff time.Duration
}

// NewPublisher returns a Publisher on js.
func NewPublisher(js jetstream.JetStream, logger *slog.Logger) *Publisher {
	return &Publisher{js: js, logger: logger, MinBackoff: 50 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// Encode marshals m, refusing messages above MaxMessageSize.
func Encode(m proto.Message) ([]byte, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	if len(data) > MaxMessageSize {
		return nil, fmt.Errorf("marshal %T: %d bytes is over the bus limit of %d", m, len(data), MaxMessageSize)
	}
	return data, nil
}

// Truncate cuts s to at most n bytes, the "…" that marks a cut included,
// without splitting a UTF-8 sequence: free text (an eval error, a build
// failure) put in a message this way keeps the message far below
// MaxMessageSize.
func Truncate(s string, n int) string { return printable.Cut(s, n, "…") }

// NewMsg builds a NATS message for m with a message id and the caller's
// trace context headers (hdr may be nil).
func NewMsg(subject, msgID string, m proto.Message, hdr nats.Header) (*nats.Msg, error) {
	data, err := Encode(m)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	for k, vs := range hdr {
		for _, v := range vs {
			msg.Header.Add(k, v)
		}
	}
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	return msg, nil
}

// Publish stores m on subject with msgID, retrying until it is stored.
// The message carries the trace context in hdr when hdr has one (the
// caller chose it: a handler publishing for another run than the one it
// handles), else the span context of ctx (see InjectTrace).
func (p *Publisher) Publish(ctx context.Context, subject, msgID string, m proto.Message, hdr nats.Header) error {
	msg, err := NewMsg(subject, msgID, m, hdr)
	if err != nil {
		return err
	}
	if !TraceOf(msg.Header).IsValid() {
		InjectTrace(ctx, msg.Header)
	}
	return p.PublishMsg(ctx, msg)
}

// PublishMsg stores msg as it is (headers included), retrying with backoff
// until it is stored or ctx ends.
func (p *Publisher) PublishMsg(ctx context.Context, msg *nats.Msg) error {
	backoff := retry.Backoff{Min: p.MinBackoff, Max: p.MaxBackoff}
	for attempt := 1; ; attempt++ {
		_, err := p.js.PublishMsg(ctx, msg)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
		p.logger.Warn("publish retry", "subject", msg.Subject, "attempt", attempt, "err", err)
		if err := backoff.Wait(ctx); err != nil {
			return fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
	}
}

// Decode unmarshals a message body into m.
func Decode(data []byte, m proto.Message) error {
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("unmarshal %T: %w", m, err)
	}
	return nil
}
