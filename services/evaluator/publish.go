package evaluator

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

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

// publishAll publishes msgs through a bus.Window: asynchronously, at most
// PublishWindow awaiting their acknowledgement, each one that was not
// acknowledged published again (message ids make repeats harmless); it
// returns once every message is stored.
func (h *handler) publishAll(ctx context.Context, run string, msgs []*nats.Msg) error {
	w := bus.NewWindow(h.s.js, bus.WindowOptions{
		Size: h.s.cfg.PublishWindow, AckTimeout: h.s.cfg.PublishAckTimeout,
		Logger: h.s.logger.With("run", run),
	})
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(wctx) })
	defer func() { stop(); wg.Wait() }()
	for _, msg := range msgs {
		if err := w.Publish(ctx, msg); err != nil {
			return err
		}
	}
	return w.Flush(ctx)
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
