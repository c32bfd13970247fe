package planner

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// handle acts on one message of the runs stream. It returns an error only
// when ctx ended; a message that cannot be decoded is logged and skipped.
func (st *runMachine) handle(ctx context.Context, msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		st.s.logger.Error("message metadata", "subject", msg.Subject(), "err", err)
		return nil
	}
	st.lastSeq = meta.Sequence.Stream
	st.s.metrics.lag.Set(float64(meta.NumPending))
	runID, kind, err := bus.ParseRunSubject(msg.Subject())
	if err != nil {
		st.s.logger.Error("unexpected subject", "subject", msg.Subject(), "err", err)
		return nil
	}
	at := meta.Timestamp
	switch kind {
	case bus.RunStartedKind:
		var m nixbuspb.RunStarted
		if st.decode(msg, &m) {
			return st.started(ctx, runID, meta.Sequence.Stream, &m, msg.Headers(), at)
		}
	case bus.RunJobKind:
		var m nixbuspb.Job
		if st.decode(msg, &m) {
			return st.job(ctx, runID, &m, at)
		}
	case bus.RunGraphKind:
		var m nixbuspb.GraphChunk
		if st.decode(msg, &m) {
			return st.graphChunk(ctx, runID, &m, at)
		}
	case bus.RunEvalKind:
		var m nixbuspb.EvalDone
		if st.decode(msg, &m) {
			return st.evaluated(ctx, runID, &m, at)
		}
	case bus.RunResultKind:
		st.s.metrics.readDelay.Observe(time.Since(at).Seconds())
		var m nixbuspb.BuildResult
		if st.decode(msg, &m) {
			return st.result(ctx, runID, &m, at, bus.TraceParent(bus.TraceOf(msg.Headers())))
		}
	case bus.RunRestartKind:
		var m nixbuspb.RestartJob
		if st.decode(msg, &m) {
			return st.restart(ctx, runID, meta.Sequence.Stream, &m, msg.Headers(), at)
		}
	case bus.RunCancelKind:
		var m nixbuspb.Cancel
		if st.decode(msg, &m) {
			if r, ok := st.runs[runID]; ok && r.expired == "" {
				return st.cancel(ctx, r, m.GetSupersededBy(), at)
			}
		}
	}
	return nil
}

func (st *runMachine) decode(msg jetstream.Msg, m proto.Message) bool {
	if err := bus.Decode(msg.Data(), m); err != nil {
		st.s.logger.Error("drop message", "subject", msg.Subject(), "err", err)
		return false
	}
	return true
}
