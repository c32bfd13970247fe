package planner

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Build requests stay in the run's trace context and carry the span links
// of the build: the plan (which nests nothing), and the build whose result
// released them.
func TestBuildRequestsLinkPlanAndWaitedForBuild(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.WithoutCancel(t.Context()))) })
	_, js := e.srv.Connect(t)
	p, err := New(testConfig(), Deps{JS: js, Logger: slog.New(slog.DiscardHandler), TracerProvider: tp})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	const run = "rtrace"
	runCtx := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	require.NoError(t, e.pub.Publish(t.Context(), bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run),
		&nixbuspb.RunStarted{RunId: run, StartedUnixMs: 1}, bus.SpanHeader(runCtx)))
	a, b := drv("a"), drv("b")
	e.job(run, &nixbuspb.Job{Attr: "a", DrvPath: a, System: "x86_64-linux"})
	e.job(run, &nixbuspb.Job{Attr: "b", DrvPath: b, System: "x86_64-linux", DependsOn: []string{a}})
	e.evalDone(run, 2, "")

	cons, err := e.js.CreateOrUpdateConsumer(t.Context(), bus.StreamBuilds, jetstream.ConsumerConfig{
		Durable: "trace-test", FilterSubject: bus.BuildAll, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	next := func() (*nixbuspb.BuildRequest, nats.Header) {
		t.Helper()
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		require.NoError(t, err)
		require.NoError(t, m.Ack())
		var req nixbuspb.BuildRequest
		require.NoError(t, bus.Decode(m.Data(), &req))
		return &req, m.Headers()
	}

	reqA, hdr := next()
	require.Equal(t, a, reqA.GetDrvPath())
	require.Equal(t, runCtx.SpanID(), bus.TraceOf(hdr).SpanID(), "a build request carries the run's context, not the plan's")
	var plan sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "plan" {
			plan = s
		}
	}
	require.NotNil(t, plan, "no plan span")
	require.Equal(t, runCtx.SpanID(), plan.Parent().SpanID())
	require.Equal(t, plan.SpanContext().SpanID(), bus.ParseTraceParent(reqA.GetPlanTraceparent()).SpanID())
	require.Empty(t, reqA.GetAfterTraceparent(), "a waited for nothing")

	// a's build, in its own span, succeeds: b is released, linked to it.
	built := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{3}, TraceFlags: trace.FlagsSampled})
	require.NoError(t, e.pub.Publish(t.Context(), bus.RunSubject(run, bus.RunResultKind), bus.MsgIDResult(run, a),
		&nixbuspb.BuildResult{RunId: run, DrvPath: a, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED}, bus.SpanHeader(built)))
	reqB, hdr := next()
	require.Equal(t, b, reqB.GetDrvPath())
	require.Equal(t, runCtx.SpanID(), bus.TraceOf(hdr).SpanID())
	require.Equal(t, built.SpanID(), bus.ParseTraceParent(reqB.GetAfterTraceparent()).SpanID())
	require.Equal(t, plan.SpanContext().SpanID(), bus.ParseTraceParent(reqB.GetPlanTraceparent()).SpanID())
}

// A run's trace context is carried only when it is one: a malformed
// traceparent on its RunStarted goes onto nothing the planner publishes.
func TestMalformedTraceContextNotCarried(t *testing.T) {
	e := newEnv(t)
	e.startPlanner(testConfig())
	const run = "rbadtrace"
	hdr := nats.Header{}
	hdr.Set(bus.TraceParentHeader, "00-not-a-trace-context-01")
	hdr.Set(bus.TraceStateHeader, "k=v")
	require.NoError(t, e.pub.Publish(t.Context(), bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run),
		&nixbuspb.RunStarted{RunId: run, StartedUnixMs: 1}, hdr))
	e.job(run, &nixbuspb.Job{Attr: "a", DrvPath: drv("a"), System: "x86_64-linux"})
	e.evalDone(run, 1, "")

	cons, err := e.js.CreateOrUpdateConsumer(t.Context(), bus.StreamBuilds, jetstream.ConsumerConfig{
		Durable: "bad-trace-test", FilterSubject: bus.BuildAll, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	require.NoError(t, err)
	require.NoError(t, m.Ack())
	require.Empty(t, m.Headers().Get(bus.TraceParentHeader))
	require.Empty(t, m.Headers().Get(bus.TraceStateHeader))
}
