package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// BenchmarkDispatch measures the bus round trip the planner drives: a job
// released on nix.build.<system>, taken by a builder (instant mode: no
// Nix), its result back on the runs stream, its dependents released. It
// reports jobs per second over a whole run and the time from a dependency's
// result to its dependent's release, on a file-backed JetStream.
func BenchmarkDispatch(b *testing.B) {
	const layers, width, fanIn = 10, 500, 3
	srv := natstest.Start(b)
	ctx, cancel := context.WithCancel(b.Context())
	var o app.Options
	fs := newFlagSet()
	o.RegisterFlags(fs)
	require.NoError(b, fs.Parse([]string{"--nats.url", srv.URL, "--state-dir", b.TempDir(), "--service", "planner", "--service", "builder"}))
	var c app.Configs
	fs = newFlagSet()
	c.RegisterFlags(fs)
	require.NoError(b, fs.Parse([]string{"--builder.instant", "--builder.concurrency", "64", "--builder.system", "x86_64-linux"}))
	inst, err := app.Start(ctx, o, &c, nil, logger(nil))
	require.NoError(b, err)
	b.Cleanup(func() {
		cancel()
		require.NoError(b, inst.Wait())
	})
	nc, js := srv.Connect(b)

	var jobsPerSec, p50, p99 []float64
	for i := range b.N {
		st := runDispatch(b, nc, js, fmt.Sprintf("bench%d", i), layers, width, fanIn)
		jobsPerSec = append(jobsPerSec, st.jobsPerSec)
		p50 = append(p50, st.p50)
		p99 = append(p99, st.p99)
	}
	b.ReportMetric(median(jobsPerSec), "jobs/s")
	b.ReportMetric(median(p50), "release-p50-ms")
	b.ReportMetric(median(p99), "release-p99-ms")
}

type dispatchStats struct{ jobsPerSec, p50, p99 float64 }

func runDispatch(b *testing.B, nc *nats.Conn, js jetstream.JetStream, runID string, layers, width, fanIn int) dispatchStats {
	b.Helper()
	ctx := b.Context()
	drv := func(l, i int) string { return fmt.Sprintf("/nix/store/%032d-%s-l%d-j%d.drv", l*width+i, runID, l, i) }
	deps := map[string][]string{}
	var jobs []*nixbuspb.Job
	rng := rand.New(rand.NewPCG(1, 2))
	for l := range layers {
		for i := range width {
			j := &nixbuspb.Job{RunId: runID, Attr: fmt.Sprintf("l%d.j%d", l, i), DrvPath: drv(l, i), System: "x86_64-linux",
				Outputs: map[string]string{"out": drv(l, i)[:len(drv(l, i))-4]}}
			if l > 0 {
				for range fanIn {
					j.DependsOn = append(j.DependsOn, drv(l-1, rng.IntN(width)))
				}
				slices.Sort(j.DependsOn)
				j.DependsOn = slices.Compact(j.DependsOn)
			}
			deps[j.DrvPath] = j.DependsOn
			jobs = append(jobs, j)
		}
	}

	// Watch both ends of every hop with plain subscriptions.
	var mu sync.Mutex
	released, resulted := map[string]time.Time{}, map[string]time.Time{}
	watch := func(subject string, into map[string]time.Time, decode func([]byte) string) *nats.Subscription {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			now := time.Now()
			d := decode(m.Data)
			mu.Lock()
			if _, ok := into[d]; !ok {
				into[d] = now
			}
			mu.Unlock()
		})
		require.NoError(b, err)
		require.NoError(b, sub.SetPendingLimits(-1, -1))
		return sub
	}
	subReq := watch(bus.BuildSubject("x86_64-linux"), released, func(d []byte) string {
		var r nixbuspb.BuildRequest
		_ = bus.Decode(d, &r)
		return r.GetDrvPath()
	})
	defer func() { _ = subReq.Unsubscribe() }()
	subRes := watch(bus.RunSubject(runID, bus.RunResultKind), resulted, func(d []byte) string {
		var r nixbuspb.BuildResult
		_ = bus.Decode(d, &r)
		return r.GetDrvPath()
	})
	defer func() { _ = subRes.Unsubscribe() }()
	require.NoError(b, nc.Flush())

	pub := bus.NewPublisher(js, logger(nil))
	require.NoError(b, pub.Publish(ctx, bus.RunSubject(runID, bus.RunStartedKind), bus.MsgIDStarted(runID),
		&nixbuspb.RunStarted{RunId: runID, Change: &nixbuspb.ChangeEvent{EventId: runID, Kind: nixbuspb.ChangeEvent_KIND_MANUAL}}, nil))
	for _, j := range jobs {
		msg, err := bus.NewMsg(bus.RunSubject(runID, bus.RunJobKind), bus.MsgIDJob(runID, j.Attr), j, nil)
		require.NoError(b, err)
		_, err = js.PublishMsgAsync(msg)
		require.NoError(b, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal(ctx.Err())
	}

	verdicts, err := js.OrderedConsumer(ctx, bus.StreamReports, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.VerdictSubject(runID)}})
	require.NoError(b, err)
	b.ResetTimer()
	start := time.Now()
	require.NoError(b, pub.Publish(ctx, bus.RunSubject(runID, bus.RunEvalKind), bus.MsgIDEvalDone(runID),
		&nixbuspb.EvalDone{RunId: runID, JobCount: int64(len(jobs))}, nil))
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	msg, err := verdicts.Next(jetstream.FetchContext(wctx))
	require.NoError(b, err)
	elapsed := time.Since(start)
	b.StopTimer()
	var v nixbuspb.RunVerdict
	require.NoError(b, bus.Decode(msg.Data(), &v))
	require.Equal(b, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, v.GetStatus())
	require.EqualValues(b, len(jobs), v.GetSucceededCount())

	mu.Lock()
	defer mu.Unlock()
	var lat []float64
	for d, ds := range deps {
		if len(ds) == 0 {
			continue
		}
		var last time.Time
		for _, dep := range ds {
			if t := resulted[dep]; t.After(last) {
				last = t
			}
		}
		rel, ok := released[d]
		require.True(b, ok, "release of %s not seen", d)
		lat = append(lat, float64(rel.Sub(last).Microseconds())/1000)
	}
	slices.Sort(lat)
	return dispatchStats{
		jobsPerSec: float64(len(jobs)) / elapsed.Seconds(),
		p50:        lat[len(lat)/2],
		p99:        lat[len(lat)*99/100],
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
