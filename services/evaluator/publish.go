package evaluator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// publishJobs publishes one message per job (see publishAll).
func (h *handler) publishJobs(ctx context.Context, run string, jobs []*nixbuspb.Job, hdr nats.Header) error {
	subject := bus.RunSubject(run, bus.RunJobKind)
	msgs := make([]*nats.Msg, 0, len(jobs))
	for _, job := range jobs {
		msg, err := jobMsg(subject, run, job, hdr)
		if err != nil {
			return err
		}
		msgs = append(msgs, msg)
	}
	return h.publishAll(ctx, run, msgs)
}

// publishGraph publishes the derivation graph between the jobs, in chunks
// (see publishAll).
func (h *handler) publishGraph(ctx context.Context, run string, chunks []*nixbuspb.GraphChunk, hdr nats.Header) error {
	subject := bus.RunSubject(run, bus.RunGraphKind)
	msgs := make([]*nats.Msg, 0, len(chunks))
	for _, c := range chunks {
		msg, err := bus.NewMsg(subject, bus.MsgIDGraph(run, c.Index), c, hdr)
		if err != nil {
			return fmt.Errorf("graph chunk %d: %w", c.Index, err)
		}
		msgs = append(msgs, msg)
	}
	return h.publishAll(ctx, run, msgs)
}

// publishAll publishes msgs asynchronously, at most PublishWindow awaiting
// their acknowledgement, waits for every acknowledgement and publishes
// again (synchronously, with retries) each message that was not
// acknowledged. Message ids make the repeats harmless.
func (h *handler) publishAll(ctx context.Context, run string, msgs []*nats.Msg) error {
	type pending struct {
		msg      *nats.Msg
		fut      jetstream.PubAckFuture
		deadline time.Time
	}
	var (
		window []pending
		failed []*nats.Msg
	)
	await := func(p pending) error {
		if p.fut == nil {
			failed = append(failed, p.msg)
			return nil
		}
		timer := time.NewTimer(time.Until(p.deadline))
		defer timer.Stop()
		select {
		case <-p.fut.Ok():
		case <-p.fut.Err():
			failed = append(failed, p.msg)
		case <-timer.C:
			failed = append(failed, p.msg)
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	for _, msg := range msgs {
		if len(window) == h.s.cfg.PublishWindow {
			if err := await(window[0]); err != nil {
				return err
			}
			window = window[1:]
		}
		fut, err := h.s.js.PublishMsgAsync(msg)
		if err != nil {
			fut = nil
		}
		window = append(window, pending{msg: msg, fut: fut, deadline: time.Now().Add(h.s.cfg.PublishAckTimeout)})
	}
	for _, p := range window {
		if err := await(p); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		h.s.logger.Warn("publish again", "run", run, "messages", len(failed))
	}
	for _, msg := range failed {
		if err := h.s.pub.PublishMsg(ctx, msg); err != nil {
			return err
		}
	}
	return nil
}

// jobMsg encodes a job. A job too large for the bus (a huge error, very
// many outputs) becomes a failed job saying so, rather than stopping the run.
func jobMsg(subject, run string, job *nixbuspb.Job, hdr nats.Header) (*nats.Msg, error) {
	id := bus.MsgIDJob(run, job.Attr)
	msg, err := bus.NewMsg(subject, id, job, hdr)
	if err == nil {
		return msg, nil
	}
	small := &nixbuspb.Job{
		RunId: run, Attr: job.Attr, AttrPath: job.AttrPath, System: job.System, Name: job.Name,
		EvalError: fmt.Sprintf("job does not fit in a bus message: %v", err),
	}
	return bus.NewMsg(subject, id, small, hdr)
}
