package evaluator

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/drv"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// publishGraph reduces the derivation graph below the jobs the stream
// published and publishes it in chunks through the stream's window; it
// returns once every job and chunk is stored, with the number of chunks.
// failure is set when the graph cannot be read.
func (st *jobStream) publishGraph(ctx context.Context) (chunks int, failure string, err error) {
	graph, err := drv.Reduce(ctx, st.store, st.drvs)
	if err != nil {
		if ctx.Err() != nil {
			return 0, "", ctx.Err()
		}
		return 0, fmt.Sprintf("read the derivation graph: %v", err), st.win.Flush(ctx)
	}
	st.drvs = nil
	subject := bus.RunSubject(st.run, bus.RunGraphKind)
	for _, c := range bus.GraphChunks(st.run, graph.Drvs, graph.Edges, st.h.s.cfg.graphChunkBytes) {
		msg, err := bus.NewMsg(subject, bus.MsgIDGraph(st.run, c.Index), c, st.hdr)
		if err != nil {
			return 0, "", fmt.Errorf("graph chunk %d: %w", c.Index, err)
		}
		if err := st.win.Publish(ctx, msg); err != nil {
			return 0, "", err
		}
		chunks++
	}
	return chunks, "", st.win.Flush(ctx)
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
