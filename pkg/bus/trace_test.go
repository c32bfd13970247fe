package bus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

func spanContext(t *testing.T, state string) trace.SpanContext {
	t.Helper()
	tid, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	require.NoError(t, err)
	sid, err := trace.SpanIDFromHex("00f067aa0ba902b7")
	require.NoError(t, err)
	ts, err := trace.ParseTraceState(state)
	require.NoError(t, err)
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
}

func TestTraceRoundTrip(t *testing.T) {
	sc := spanContext(t, "vendor=abc")
	ctx := trace.ContextWithSpanContext(t.Context(), sc)

	hdr := nats.Header{"Nats-Msg-Id": {"id-1"}}
	bus.InjectTrace(ctx, hdr)
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", hdr.Get(bus.TraceParentHeader))
	require.Equal(t, "vendor=abc", hdr.Get(bus.TraceStateHeader))
	require.Equal(t, "id-1", hdr.Get("Nats-Msg-Id"), "other headers are kept")

	got := trace.SpanContextFromContext(bus.ExtractTrace(t.Context(), hdr))
	require.True(t, got.IsRemote())
	require.True(t, got.Equal(sc.WithRemote(true)), "got %v", got)
	require.Equal(t, nats.Header{
		bus.TraceParentHeader: hdr[bus.TraceParentHeader], bus.TraceStateHeader: hdr[bus.TraceStateHeader],
	}, bus.TraceHeader(ctx))
	require.True(t, bus.TraceOf(bus.SpanHeader(sc)).Equal(sc.WithRemote(true)))
}

// A span context kept in a message field (a span link) reads back; an
// empty or malformed value is no span.
func TestTraceParentField(t *testing.T) {
	sc := spanContext(t, "vendor=abc")
	tp := bus.TraceParent(sc)
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tp)
	got := bus.ParseTraceParent(tp)
	require.Equal(t, sc.TraceID(), got.TraceID())
	require.Equal(t, sc.SpanID(), got.SpanID())
	require.Empty(t, bus.TraceParent(trace.SpanContext{}))
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"} {
		require.False(t, bus.ParseTraceParent(bad).IsValid(), bad)
	}
}

func TestTraceCanonicalCaseKeys(t *testing.T) {
	sc := spanContext(t, "vendor=abc")
	// A client that canonicalises header keys as HTTP does.
	hdr := nats.Header{
		"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Tracestate":  {"vendor=abc"},
	}
	require.True(t, bus.TraceOf(hdr).Equal(sc.WithRemote(true)))

	// Injecting replaces both spellings: one context per message.
	other := spanContext(t, "")
	other = other.WithSpanID(trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	bus.InjectTrace(trace.ContextWithSpanContext(t.Context(), other), hdr)
	require.Equal(t, nats.Header{bus.TraceParentHeader: {"00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"}}, hdr)
}

func TestTraceAbsent(t *testing.T) {
	hdr := nats.Header{"traceparent": {"garbage"}}
	bus.InjectTrace(t.Context(), hdr) // no span in ctx: left alone
	require.Equal(t, nats.Header{"traceparent": {"garbage"}}, hdr)
	require.Nil(t, bus.TraceHeader(t.Context()))
	require.False(t, bus.TraceOf(hdr).IsValid())
	require.False(t, bus.TraceOf(nil).IsValid())
	ctx := bus.ExtractTrace(t.Context(), hdr)
	require.False(t, trace.SpanContextFromContext(ctx).IsValid())
}

// Publish sends the ctx's span context, unless the caller's header names one.
func TestPublishCarriesTrace(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamOptions{}))
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))

	sc := spanContext(t, "")
	sctx := trace.ContextWithSpanContext(ctx, sc)
	ev := &nixbuspb.ChangeEvent{EventId: "e1", Project: "p"}
	require.NoError(t, pub.Publish(sctx, bus.ChangeSubject("p"), "m1", ev, nil))
	explicit := sc.WithSpanID(trace.SpanID{9, 9, 9, 9, 9, 9, 9, 9})
	require.NoError(t, pub.Publish(sctx, bus.ChangeSubject("p"), "m2", ev, bus.SpanHeader(explicit)))
	require.NoError(t, pub.Publish(ctx, bus.ChangeSubject("p"), "m3", ev, nil))

	stream, err := js.Stream(ctx, bus.StreamChanges)
	require.NoError(t, err)
	for seq, want := range map[uint64]trace.SpanContext{1: sc, 2: explicit, 3: {}} {
		m, err := stream.GetMsg(ctx, seq)
		require.NoError(t, err)
		require.True(t, bus.TraceOf(m.Header).Equal(want.WithRemote(want.IsValid())), "message %d: %v", seq, m.Header)
	}
}

// Work gives each handler a span that is the child of the message's
// context, and what the handler publishes is the child of that span.
func TestWorkSpans(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamOptions{}))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.WithoutCancel(ctx))) })
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))

	parent := spanContext(t, "")
	pctx := trace.ContextWithSpanContext(ctx, parent)
	require.NoError(t, pub.Publish(pctx, bus.ChangeSubject("p"), "ok", &nixbuspb.ChangeEvent{EventId: "ok"}, nil))
	require.NoError(t, pub.Publish(pctx, bus.ChangeSubject("p"), "bad", &nixbuspb.ChangeEvent{EventId: "bad"}, nil))

	done := make(chan error, 1)
	go func() {
		done <- bus.Work(ctx, js, bus.WorkOptions{
			Stream: bus.StreamChanges, Durable: "trace-test", Filter: bus.ChangeAll, SpanName: "evaluate",
			Tracer: bus.Tracer(tp, "test"), FetchWait: 100 * time.Millisecond,
		}, slog.New(slog.NewTextHandler(io.Discard, nil)), func(ctx context.Context, msg jetstream.Msg) error {
			var ev nixbuspb.ChangeEvent
			if err := bus.Decode(msg.Data(), &ev); err != nil {
				return bus.Permanent(err)
			}
			if ev.GetEventId() == "bad" {
				return bus.Permanent(errors.New("bad event"))
			}
			return pub.Publish(ctx, bus.RunSubject("r1", bus.RunStartedKind), "started", &nixbuspb.RunStarted{RunId: "r1"}, nil)
		})
	}()
	require.Eventually(t, func() bool { return len(rec.Ended()) == 2 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	for _, s := range rec.Ended() {
		require.Equal(t, "evaluate", s.Name())
		require.Equal(t, trace.SpanKindConsumer, s.SpanKind())
		require.Equal(t, parent.TraceID(), s.SpanContext().TraceID())
		require.Equal(t, parent.SpanID(), s.Parent().SpanID())
		require.True(t, s.Parent().IsRemote())
	}
	byMsg := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if a.Key == "messaging.message.id" {
				byMsg[a.Value.AsString()] = s
			}
		}
	}
	require.Equal(t, codes.Unset, byMsg["ok"].Status().Code)
	require.Equal(t, codes.Error, byMsg["bad"].Status().Code)
	require.Equal(t, "bad event", byMsg["bad"].Status().Description)
	require.Len(t, byMsg["bad"].Events(), 1, "the error is recorded")

	// RunStarted went out as the child of the handler's span.
	stream, err := js.Stream(t.Context(), bus.StreamRuns)
	require.NoError(t, err)
	m, err := stream.GetLastMsgForSubject(t.Context(), bus.RunSubject("r1", bus.RunStartedKind))
	require.NoError(t, err)
	require.Equal(t, byMsg["ok"].SpanContext().SpanID(), bus.TraceOf(m.Header).SpanID())
}
