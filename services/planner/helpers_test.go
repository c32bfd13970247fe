package planner

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

func testConfig() Config {
	c := DefaultConfig()
	c.CheckpointInterval = 20 * time.Millisecond
	c.PublishAckTimeout = 2 * time.Second
	return c
}

type env struct {
	t   *testing.T
	srv *natstest.Server
	js  jetstream.JetStream
	pub *bus.Publisher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}, bucket))
	return &env{t: t, srv: srv, js: js, pub: bus.NewPublisher(js, slog.New(slog.DiscardHandler))}
}

// startPlanner runs a planner on its own connection until the returned
// stop is called (or the test ends).
func (e *env) startPlanner(cfg Config) (stop func()) {
	e.t.Helper()
	return e.startPlannerWith(cfg, nil, nil)
}

// newPlanner makes a planner on its own connection.
func (e *env) newPlanner(cfg Config, d Deps) *Service {
	e.t.Helper()
	_, d.JS = e.srv.Connect(e.t)
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := New(cfg, d)
	require.NoError(e.t, err)
	return p
}

// run runs p until the returned stop is called (or the test ends).
func (e *env) run(p *Service) (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(e.t, <-done)
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) publish(subject, id string, m proto.Message) {
	e.t.Helper()
	require.NoError(e.t, e.pub.Publish(e.t.Context(), subject, id, m, nil))
}

func (e *env) startRun(run string, change *nixbuspb.ChangeEvent) {
	e.publish(bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run),
		&nixbuspb.RunStarted{RunId: run, Change: change, StartedUnixMs: time.Now().UnixMilli()})
}

func (e *env) job(run string, j *nixbuspb.Job) {
	j.RunId = run
	e.publish(bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, j.GetAttr()), j)
}

func (e *env) evalDone(run string, count int, evalErr string) {
	e.publish(bus.RunSubject(run, bus.RunEvalKind), bus.MsgIDEvalDone(run),
		&nixbuspb.EvalDone{RunId: run, JobCount: int64(count), Error: evalErr})
}

// verdict waits for a run's verdict.
func (e *env) verdict(run string) *nixbuspb.RunVerdict {
	e.t.Helper()
	return e.waitVerdict(run, func(*assert.CollectT, *nixbuspb.RunVerdict) {})
}

// verdictRevision waits for the verdict of run's revision rev.
func (e *env) verdictRevision(run string, rev uint64) *nixbuspb.RunVerdict {
	e.t.Helper()
	return e.waitVerdict(run, func(c *assert.CollectT, v *nixbuspb.RunVerdict) {
		assert.Equal(c, rev, v.GetRevision(), "verdict revision")
	})
}

// waitVerdict waits for run's newest verdict to pass check.
func (e *env) waitVerdict(run string, check func(*assert.CollectT, *nixbuspb.RunVerdict)) *nixbuspb.RunVerdict {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), bus.StreamReports)
	require.NoError(e.t, err)
	var v nixbuspb.RunVerdict
	require.EventuallyWithT(e.t, func(c *assert.CollectT) {
		m, err := s.GetLastMsgForSubject(e.t.Context(), bus.VerdictSubject(run))
		require.NoError(c, err, "no verdict yet")
		assert.NoError(c, bus.Decode(m.Data, &v), "undecodable verdict")
		check(c, &v)
	}, 20*time.Second, 10*time.Millisecond, "no verdict for %s", run)
	return &v
}

// count returns how many messages stream holds on subject.
func count(t *testing.T, js jetstream.JetStream, stream, subject string) int {
	t.Helper()
	n, err := natstest.Stored(t.Context(), js, stream, subject)
	require.NoError(t, err)
	return n
}

// stored is count for a require.Eventually condition, which must not fail
// the test: -1 if the stream cannot be read.
func (e *env) stored(stream, subject string) int {
	n, err := natstest.Stored(e.t.Context(), e.js, stream, subject)
	if err != nil {
		return -1
	}
	return n
}

// gauge is the value of the gauge name in g, failing the test if there is
// none; tryGauge is it for a require.Eventually condition.
func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	v, err := tryGauge(g, name)
	require.NoError(t, err)
	return v
}

func tryGauge(g prometheus.Gatherer, name string) (float64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// outcomes returns a run's outcomes by attr, asserting one per attr.
func (e *env) outcomes(run string) map[string]*nixbuspb.JobOutcome {
	e.t.Helper()
	got := map[string]*nixbuspb.JobOutcome{}
	for _, o := range natstest.Read[nixbuspb.JobOutcome](e.t, e.js, bus.StreamReports, bus.OutcomeSubject(run)) {
		_, dup := got[o.GetAttr()]
		require.False(e.t, dup, "two outcomes for %s", o.GetAttr())
		got[o.GetAttr()] = o
	}
	return got
}

// builder is a fake builder: it takes every build request, answers with
// the result decide gives, and records what it was asked to build.
type builder struct {
	mu       sync.Mutex
	requests map[string]int // run/drv -> times requested
	systems  map[string]string
}

func (e *env) startBuilder(decide func(*nixbuspb.BuildRequest) nixbuspb.BuildStatus) *builder {
	e.t.Helper()
	b := &builder{requests: map[string]int{}, systems: map[string]string{}}
	cons, err := e.js.CreateOrUpdateConsumer(e.t.Context(), bus.StreamBuilds, jetstream.ConsumerConfig{
		Durable: "test-builder", FilterSubject: bus.BuildAll, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(e.t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			batch, err := cons.Fetch(50, jetstream.FetchMaxWait(50*time.Millisecond))
			if err != nil {
				continue
			}
			for m := range batch.Messages() {
				var req nixbuspb.BuildRequest
				if bus.Decode(m.Data(), &req) != nil {
					continue
				}
				b.mu.Lock()
				b.requests[req.GetRunId()+"/"+req.GetDrvPath()]++
				b.systems[req.GetDrvPath()] = m.Subject()
				b.mu.Unlock()
				status := decide(&req)
				res := &nixbuspb.BuildResult{RunId: req.GetRunId(), DrvPath: req.GetDrvPath(), System: req.GetSystem(),
					Status: status, LogKey: bus.LogKey(req.GetRunId(), req.GetDrvPath()), DurationMs: 7, Attrs: req.GetAttrs(),
					RestartSeq: req.GetRestartSeq()}
				if status != nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED {
					res.Error = "builder for '" + req.GetDrvPath() + "' failed with exit code 1"
				}
				if err := e.pub.Publish(ctx, bus.RunSubject(req.GetRunId(), bus.RunResultKind),
					bus.MsgIDRebuildResult(req.GetRunId(), req.GetDrvPath(), req.GetRestartSeq()), res, nil); err != nil {
					return
				}
				_ = m.Ack()
			}
		}
	}()
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	return b
}

func (b *builder) counts() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.requests {
		out[k] = v
	}
	return out
}

func succeedAll(*nixbuspb.BuildRequest) nixbuspb.BuildStatus {
	return nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED
}
