package planner

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/dag"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// BenchmarkDispatch measures the planner on the bus with a builder that
// succeeds instantly: jobs per second through planner -> nix.build.<system>
// -> builder -> result -> release of dependents, and the time from a
// dependency's result to its dependent's release (as the builder sees the
// request), on a file-backed JetStream. Target: >= 2,000 jobs/s, p99 < 20 ms.
func BenchmarkDispatch(b *testing.B) {
	const n = 5000
	srv := natstest.Start(b)
	_, js := srv.Connect(b)
	require.NoError(b, bus.EnsureStreams(b.Context(), js, bus.StreamOptions{}))
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))

	// A package-set-like DAG: each job waits for up to 4 of the 300 before it.
	rng := rand.New(rand.NewPCG(7, 7))
	deps := make([][]int, n)
	for i := range n {
		if i < 50 {
			continue
		}
		for range 1 + rng.IntN(4) {
			deps[i] = append(deps[i], i-1-rng.IntN(min(i, 300)))
		}
		slices.Sort(deps[i])
		deps[i] = slices.Compact(deps[i])
	}
	name := func(i int) string { return drv(fmt.Sprintf("job%d", i)) }
	index := map[string]int{}
	for i := range n {
		index[name(i)] = i
	}

	cfg := DefaultConfig()
	reg := prometheus.NewRegistry()
	p, err := New(cfg, Deps{JS: js, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(b.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = p.Run(ctx)
	}()
	defer func() { cancel(); wg.Wait() }()

	// The instant builder.
	var mu sync.Mutex
	resultAt := make([]time.Time, n)
	var lat []time.Duration
	done := make(chan struct{})
	built := 0
	stop := consumeRequests(b, js, "bench-builder", bus.BuildAll, func(req *nixbuspb.BuildRequest, m jetstream.Msg) {
		now := time.Now()
		i := index[req.GetDrvPath()]
		mu.Lock()
		if len(deps[i]) > 0 {
			var last time.Time
			for _, d := range deps[i] {
				if resultAt[d].After(last) {
					last = resultAt[d]
				}
			}
			lat = append(lat, now.Sub(last))
		}
		resultAt[i] = time.Now()
		built++
		if built == n {
			close(done)
		}
		mu.Unlock()
		msg, err := bus.NewMsg(bus.RunSubject(req.GetRunId(), bus.RunResultKind), bus.MsgIDResult(req.GetRunId(), req.GetDrvPath()),
			&nixbuspb.BuildResult{RunId: req.GetRunId(), DrvPath: req.GetDrvPath(), System: req.GetSystem(),
				Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED}, nil)
		if err == nil {
			if _, err := js.PublishMsgAsync(msg); err != nil {
				_ = pub.PublishMsg(ctx, msg)
			}
		}
		_ = m.Ack()
	})
	defer stop()

	const run = "bench"
	b.ResetTimer()
	start := time.Now()
	require.NoError(b, pub.Publish(ctx, bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run),
		&nixbuspb.RunStarted{RunId: run, StartedUnixMs: start.UnixMilli()}, nil))
	for i := range n {
		var dd []string
		for _, d := range deps[i] {
			dd = append(dd, name(d))
		}
		msg, err := bus.NewMsg(bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, fmt.Sprint(i)),
			&nixbuspb.Job{RunId: run, Attr: fmt.Sprint(i), DrvPath: name(i), System: x86, DependsOn: dd}, nil)
		require.NoError(b, err)
		_, err = js.PublishMsgAsync(msg)
		require.NoError(b, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("jobs not published")
	}
	evaluated := time.Now()
	require.NoError(b, pub.Publish(ctx, bus.RunSubject(run, bus.RunEvalKind), bus.MsgIDEvalDone(run),
		&nixbuspb.EvalDone{RunId: run, JobCount: n}, nil))
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d jobs built", built, n)
	}
	elapsed := time.Since(evaluated)
	b.StopTimer()

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(n)/elapsed.Seconds(), "jobs/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(float64(evaluated.Sub(start).Milliseconds()), "publish-jobs-ms")
	// Where the time goes: reading results off the stream, and planning.
	mfs, err := reg.Gather()
	require.NoError(b, err)
	for _, mf := range mfs {
		switch mf.GetName() {
		case "nixbus_planner_read_delay_seconds", "nixbus_planner_result_handling_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount())*1000, strings.TrimPrefix(mf.GetName(), "nixbus_planner_")+"-mean-ms")
		}
	}
}

// BenchmarkLargeRun has the planner plan a 100,000-job run (a fifth of the
// jobs waiting for nothing, a tenth cached) while a small run on another
// system builds a chain of jobs one after another with an instant builder.
// It reports how long the large run took to plan and to publish its first
// releases, and how long each step of the small chain waited meanwhile
// between its dependency's result and its own release: how much one run
// holds up another.
func BenchmarkLargeRun(b *testing.B) {
	const n, chain = 100_000, 20_000
	srv := natstest.Start(b)
	_, js := srv.Connect(b)
	require.NoError(b, bus.EnsureStreams(b.Context(), js, bus.StreamOptions{}))
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	reg := prometheus.NewRegistry()
	p, err := New(DefaultConfig(), Deps{JS: js, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(b.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = p.Run(ctx)
	}()
	defer func() { cancel(); wg.Wait() }()

	publishAsync := func(msg *nats.Msg) {
		for {
			if _, err := js.PublishMsgAsync(msg); err == nil {
				return
			}
			<-js.PublishAsyncComplete()
		}
	}
	publishJobs := func(run string, jobs []*nixbuspb.Job) {
		require.NoError(b, pub.Publish(ctx, bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run),
			&nixbuspb.RunStarted{RunId: run, StartedUnixMs: time.Now().UnixMilli()}, nil))
		for _, j := range jobs {
			msg, err := bus.NewMsg(bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, j.GetAttr()), j, nil)
			require.NoError(b, err)
			publishAsync(msg)
		}
		<-js.PublishAsyncComplete()
	}
	evalDone := func(run string, count int) {
		require.NoError(b, pub.Publish(ctx, bus.RunSubject(run, bus.RunEvalKind), bus.MsgIDEvalDone(run),
			&nixbuspb.EvalDone{RunId: run, JobCount: int64(count)}, nil))
	}

	// The large run, and how many releases its start makes.
	const large = "large"
	rng := rand.New(rand.NewPCG(1, 2))
	name := func(i int) string { return drv(fmt.Sprintf("job%d", i)) }
	jobs := make([]*nixbuspb.Job, n)
	planJobs := make([]dag.Job, n)
	for i := range n {
		var dd []string
		if i > 0 && rng.IntN(5) != 0 {
			for range 1 + rng.IntN(4) {
				dd = append(dd, name(i-1-rng.IntN(min(i, 300))))
			}
		}
		jobs[i] = &nixbuspb.Job{RunId: large, Attr: fmt.Sprint(i), DrvPath: name(i), System: x86, DependsOn: dd,
			Cached: rng.IntN(10) == 0, Outputs: map[string]string{"out": name(i) + "-out"}}
		planJobs[i] = dag.Job{Attr: jobs[i].Attr, Drv: jobs[i].DrvPath, System: x86, Cached: jobs[i].Cached, DependsOn: dd}
	}
	var first dag.Events
	dag.New(planJobs, dag.Graph{}).Start(&first)
	publishJobs(large, jobs)

	// The small run: a chain on another system, built instantly, step by
	// step; each step's wait is recorded with the time it ended.
	const small = "small"
	type step struct {
		at   time.Time
		wait time.Duration
	}
	var mu sync.Mutex
	var steps []step
	var lastResult time.Time
	stop := consumeRequests(b, js, "bench-chain", bus.BuildSubject(arm), func(req *nixbuspb.BuildRequest, m jetstream.Msg) {
		now := time.Now()
		mu.Lock()
		if !lastResult.IsZero() {
			steps = append(steps, step{now, now.Sub(lastResult)})
		}
		lastResult = time.Now()
		mu.Unlock()
		_ = pub.Publish(ctx, bus.RunSubject(small, bus.RunResultKind), bus.MsgIDResult(small, req.GetDrvPath()),
			&nixbuspb.BuildResult{RunId: small, DrvPath: req.GetDrvPath(), System: arm, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED}, nil)
		_ = m.Ack()
	})
	defer stop()
	chainJobs := make([]*nixbuspb.Job, chain)
	for i := range chain {
		chainJobs[i] = &nixbuspb.Job{RunId: small, Attr: fmt.Sprintf("c%d", i), DrvPath: drv(fmt.Sprintf("c%d", i)), System: arm}
		if i > 0 {
			chainJobs[i].DependsOn = []string{chainJobs[i-1].DrvPath}
		}
	}
	publishJobs(small, chainJobs)
	evalDone(small, chain)
	require.Eventually(b, func() bool { mu.Lock(); defer mu.Unlock(); return len(steps) >= 100 }, time.Minute, time.Millisecond)

	metric := func(name string) (float64, bool) {
		mfs, err := reg.Gather()
		require.NoError(b, err)
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if h := m.GetHistogram(); h != nil {
					return h.GetSampleSum(), h.GetSampleCount() > 0
				}
				for _, l := range m.GetLabel() {
					if l.GetValue() == x86 {
						return m.GetCounter().GetValue(), true
					}
				}
			}
		}
		return 0, false
	}
	b.ResetTimer()
	t0 := time.Now()
	evalDone(large, n)
	require.Eventually(b, func() bool {
		v, _ := metric("nixbus_planner_released_total")
		return int(v) == len(first.Releases)
	}, 2*time.Minute, time.Millisecond, "the large run's first releases were not published")
	released := time.Since(t0)
	b.StopTimer()
	planned, ok := metric("nixbus_planner_planning_seconds")
	require.True(b, ok)
	// Every step that waited during the window counts, the one the window
	// held up included: wait for a step to end after it.
	end := t0.Add(released)
	require.Eventually(b, func() bool { mu.Lock(); defer mu.Unlock(); return steps[len(steps)-1].at.After(end) },
		time.Minute, time.Millisecond, "the small run stopped")

	mu.Lock()
	var waits []time.Duration
	for _, s := range steps {
		if s.at.After(t0) && s.at.Add(-s.wait).Before(end) {
			waits = append(waits, s.wait)
		}
	}
	mu.Unlock()
	require.NotEmpty(b, waits, "the small run made no step while the large one was planned")
	slices.Sort(waits)
	q := func(f float64) float64 { return float64(waits[int(f*float64(len(waits)-1))].Microseconds()) / 1000 }
	b.ReportMetric(planned*1000, "plan-ms")
	b.ReportMetric(float64(released.Milliseconds()), "first-releases-ms")
	b.ReportMetric(float64(len(first.Releases)), "first-releases")
	b.ReportMetric(float64(len(waits)), "small-steps")
	b.ReportMetric(q(0.5), "small-p50-ms")
	b.ReportMetric(q(0.99), "small-p99-ms")
	b.ReportMetric(q(1), "small-max-ms")
}

// consumeRequests hands every build request on filter to f, through a
// durable consumer, until stop is called.
func consumeRequests(b *testing.B, js jetstream.JetStream, durable, filter string, f func(*nixbuspb.BuildRequest, jetstream.Msg)) (stop func()) {
	b.Helper()
	cons, err := js.CreateOrUpdateConsumer(b.Context(), bus.StreamBuilds, jetstream.ConsumerConfig{
		Durable: durable, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1,
	})
	require.NoError(b, err)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var req nixbuspb.BuildRequest
		if bus.Decode(m.Data(), &req) != nil {
			return
		}
		f(&req, m)
	}, jetstream.PullMaxMessages(256))
	require.NoError(b, err)
	return cc.Stop
}
