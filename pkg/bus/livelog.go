package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/retry"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// LiveLog is what a build streamed of its log so far (see LogChunk): the
// newest attempt's chunks joined.
type LiveLog struct {
	Data []byte
	// Final: the attempt ended (the stored log is, or will be, complete).
	Final     bool
	Truncated bool
	Builder   string
}

// ReadOrdered reads every message of stream matching filters with a
// stream sequence above after, in order, calling fn on each, and returns
// the sequence of the last one read (after when there were none). It stops
// at the messages stored when it started.
//
// A read cut by a cluster's leader change (the stream leader holding the
// ordered consumer shut down, or none answers until a new one is elected)
// goes on after the last message read, a few times, backing off.
func ReadOrdered(ctx context.Context, js jetstream.JetStream, stream string, filters []string, after uint64, fn func(jetstream.Msg) error) (uint64, error) {
	wait := retry.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for try := 1; ; try++ {
		last, err := readOrderedOnce(ctx, js, stream, filters, after, fn)
		if !leaderChange(err) || try == readOrderedTries || wait.Wait(ctx) != nil {
			return last, err
		}
		after = last
	}
}

// readOrderedTries bounds the reads of ReadOrdered cut by leader changes.
const readOrderedTries = 10

func leaderChange(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrServerShutdown)
}

func readOrderedOnce(ctx context.Context, js jetstream.JetStream, stream string, filters []string, after uint64, fn func(jetstream.Msg) error) (uint64, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters}
	if after > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = after + 1
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return after, fmt.Errorf("read %s: %w", stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return after, fmt.Errorf("read %s: %w", stream, err)
	}
	pending := info.NumPending
	last := after
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 512)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return last, fmt.Errorf("read %s: %w", stream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return last, fmt.Errorf("read %s: %w", stream, err)
			}
			last = meta.Sequence.Stream
			pending = meta.NumPending
			if err := fn(msg); err != nil {
				return last, err
			}
		}
		if err := batch.Error(); err != nil {
			return last, fmt.Errorf("read %s: %w", stream, err)
		}
		if n == 0 {
			return last, fmt.Errorf("read %s: no messages though %d are pending", stream, pending)
		}
	}
	return last, nil
}

// ReadLiveLog returns what the newest attempt of a build of run (drv: a
// derivation path or base name) streamed, up to max bytes (the head). It
// reports false when the build streamed nothing.
func ReadLiveLog(ctx context.Context, js jetstream.JetStream, runID, drv string, max int) (LiveLog, bool, error) {
	subject := LogSubject(runID, drv)
	stream, err := js.Stream(ctx, StreamLogs)
	if err != nil {
		return LiveLog{}, false, fmt.Errorf("open %s: %w", StreamLogs, err)
	}
	raw, err := stream.GetLastMsgForSubject(ctx, subject)
	if IsNotFound(err) {
		return LiveLog{}, false, nil
	}
	if err != nil {
		return LiveLog{}, false, fmt.Errorf("live log of %s: %w", subject, err)
	}
	var newest nixbuspb.LogChunk
	if err := Decode(raw.Data, &newest); err != nil {
		return LiveLog{}, false, err
	}
	out := LiveLog{Builder: newest.GetBuilder()}
	_, err = ReadOrdered(ctx, js, StreamLogs, []string{subject}, 0, func(m jetstream.Msg) error {
		var c nixbuspb.LogChunk
		if Decode(m.Data(), &c) != nil || c.GetRestartSeq() != newest.GetRestartSeq() || c.GetDelivery() != newest.GetDelivery() {
			return nil
		}
		if room := max - len(out.Data); room > 0 {
			out.Data = append(out.Data, c.GetData()[:min(room, len(c.GetData()))]...)
		}
		out.Final = out.Final || c.GetFinal()
		out.Truncated = out.Truncated || c.GetTruncated()
		return nil
	})
	return out, true, err
}
