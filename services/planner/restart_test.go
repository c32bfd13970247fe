package planner

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// requests hands out build requests one at a time, as a builder would.
type requests struct {
	e    *env
	cons jetstream.Consumer
}

func (e *env) requests() *requests {
	e.t.Helper()
	cons, err := e.js.CreateOrUpdateConsumer(e.t.Context(), bus.StreamBuilds, jetstream.ConsumerConfig{
		Durable: "test-restart", FilterSubject: bus.BuildAll, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(e.t, err)
	return &requests{e: e, cons: cons}
}

func (q *requests) next() *nixbuspb.BuildRequest {
	q.e.t.Helper()
	m, err := q.cons.Next(jetstream.FetchMaxWait(20 * time.Second))
	require.NoError(q.e.t, err, "no build request")
	require.NoError(q.e.t, m.Ack())
	var req nixbuspb.BuildRequest
	require.NoError(q.e.t, bus.Decode(m.Data(), &req))
	return &req
}

func (q *requests) answer(req *nixbuspb.BuildRequest, st nixbuspb.BuildStatus) {
	res := &nixbuspb.BuildResult{RunId: req.GetRunId(), DrvPath: req.GetDrvPath(), System: req.GetSystem(), Status: st,
		Attrs: req.GetAttrs(), RestartSeq: req.GetRestartSeq()}
	q.e.publish(bus.RunSubject(req.GetRunId(), bus.RunResultKind), bus.MsgIDRebuildResult(req.GetRunId(), req.GetDrvPath(), req.GetRestartSeq()), res)
}

func (e *env) restartJob(run, drv string, at int64) uint64 {
	e.t.Helper()
	msg, err := bus.NewMsg(bus.RunSubject(run, bus.RunRestartKind), bus.MsgIDRestart(run, drv, at),
		&nixbuspb.RestartJob{RunId: run, DrvPath: drv, RequestedBy: "alice", RequestedUnixMs: at}, nil)
	require.NoError(e.t, err)
	ack, err := e.js.PublishMsg(e.t.Context(), msg)
	require.NoError(e.t, err)
	return ack.Sequence
}

// A failed job of an ended run is built again on request, once; jobs that
// did not fail, unknown jobs and jobs of running runs are not.
func TestPlannerRestartJob(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	q := e.requests()
	const (
		ok     = "/nix/store/00000000000000000000000000000001-ok.drv"
		broken = "/nix/store/00000000000000000000000000000002-broken.drv"
		later  = "/nix/store/00000000000000000000000000000003-later.drv"
		last   = "/nix/store/00000000000000000000000000000004-last.drv"
	)
	e.startRun("r1", &nixbuspb.ChangeEvent{Project: "p", Change: 1, Patchset: 1})
	e.job("r1", &nixbuspb.Job{Attr: "ok", DrvPath: ok, System: "x86_64-linux"})
	e.job("r1", &nixbuspb.Job{Attr: "broken", DrvPath: broken, System: "x86_64-linux", Outputs: map[string]string{"out": "/nix/store/x-broken"}})
	e.evalDone("r1", 2, "")
	for range 2 {
		req := q.next()
		st := nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
		if req.GetDrvPath() == broken {
			st = nixbuspb.BuildStatus_BUILD_STATUS_FAILED
		}
		require.Zero(t, req.GetRestartSeq())
		q.answer(req, st)
	}
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, e.verdict("r1").GetStatus())

	e.restartJob("r1", ok, 1)                         // succeeded: no rebuild
	e.restartJob("r1", "/nix/store/0-unknown.drv", 2) // no such job
	seq := e.restartJob("r1", broken, 3)              // rebuilt
	e.restartJob("r1", broken, 3)                     // the same request again: one rebuild
	req := q.next()
	require.Equal(t, broken, req.GetDrvPath())
	require.Equal(t, seq, req.GetRestartSeq())
	require.Equal(t, []string{"broken"}, req.GetAttrs())
	require.Equal(t, "/nix/store/x-broken", req.GetOutputs()["out"])
	q.answer(req, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED)
	e.restartJob("r1", broken, 4) // its rebuild succeeded: nothing to do

	// A run still running: its jobs are not restarted.
	e.startRun("r2", &nixbuspb.ChangeEvent{Project: "p", Change: 2, Patchset: 1})
	e.job("r2", &nixbuspb.Job{Attr: "later", DrvPath: later, System: "x86_64-linux"})
	e.evalDone("r2", 1, "")
	req = q.next()
	require.Equal(t, later, req.GetDrvPath())
	e.restartJob("r2", later, 5) // still running (its result is not in)
	q.answer(req, nixbuspb.BuildStatus_BUILD_STATUS_FAILED)
	e.verdict("r2")
	// The planner reads the stream in order: once r3's build is released,
	// every restart above was handled.
	e.startRun("r3", &nixbuspb.ChangeEvent{Project: "p", Change: 3, Patchset: 1})
	e.job("r3", &nixbuspb.Job{Attr: "last", DrvPath: last, System: "x86_64-linux"})
	e.evalDone("r3", 1, "")
	req = q.next()
	require.Equal(t, last, req.GetDrvPath(), "no other rebuild was released")
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, e.verdict("r1").GetStatus(), "the vote stays")
}
