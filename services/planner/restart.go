package planner

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// restart honours a RestartJob (published by the web page for an admin):
// the failed build of a run that has ended is released again, its request
// and result told apart from the first build's by restart_seq, the stream
// sequence of the RestartJob. The run's outcomes and vote stay as they were:
// the rebuild's result is there for whoever looks at the run.
//
// It is refused (logged, nothing published) for a run the planner still
// runs, a derivation the run has no job for, a build that did not fail, or a
// restart already answered (a replay).
func (st *state) restart(ctx context.Context, runID string, seq uint64, m *nixbuspb.RestartJob, hdr nats.Header) error {
	logger := st.s.logger.With("run", runID, "drv", m.GetDrvPath(), "requested_by", m.GetRequestedBy())
	if _, active := st.runs[runID]; active {
		logger.Warn("restart of a job of a run still running ignored")
		return nil
	}
	var (
		req    *nixbuspb.BuildRequest
		last   *nixbuspb.BuildResult
		served bool
	)
	_, err := bus.ReadOrdered(ctx, st.s.js, bus.StreamRuns,
		[]string{bus.RunSubject(runID, bus.RunJobKind), bus.RunSubject(runID, bus.RunResultKind)}, 0,
		func(msg jetstream.Msg) error {
			_, kind, _ := bus.ParseRunSubject(msg.Subject())
			switch kind {
			case bus.RunJobKind:
				var j nixbuspb.Job
				if bus.Decode(msg.Data(), &j) != nil || j.GetDrvPath() != m.GetDrvPath() || j.GetDrvPath() == "" {
					return nil
				}
				if req == nil {
					req = &nixbuspb.BuildRequest{RunId: runID, DrvPath: j.GetDrvPath(), System: j.GetSystem(), Outputs: j.GetOutputs(), RestartSeq: seq}
				}
				req.Attrs = append(req.Attrs, j.GetAttr())
			case bus.RunResultKind:
				var r nixbuspb.BuildResult
				if bus.Decode(msg.Data(), &r) != nil || r.GetDrvPath() != m.GetDrvPath() {
					return nil
				}
				last = &r
				served = served || r.GetRestartSeq() == seq
			}
			return nil
		})
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		logger.Error("restart: read the run", "err", err)
		return nil
	case req == nil || len(req.GetDrvPath()) > maxDrvPathBytes || len(req.GetSystem()) > maxSystemBytes:
		logger.Warn("restart of an unknown job ignored")
		return nil
	case served:
		return nil // answered before this replay
	case last == nil || last.GetStatus() == nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED:
		logger.Warn("restart of a job whose build did not fail ignored")
		return nil
	}
	capRequest(req)
	msg, err := bus.NewMsg(bus.BuildSubject(req.GetSystem()), bus.MsgIDRebuild(runID, req.GetDrvPath(), seq), req, hdr)
	if err != nil {
		// capRequest makes every request fit: this is a bug.
		return fmt.Errorf("planner: restart %s: %w", runID, err)
	}
	if err := st.out.publish(ctx, msg); err != nil {
		return errors.Join(err, ctx.Err())
	}
	logger.Info("job restarted", "attr", req.GetAttrs()[0])
	return nil
}
