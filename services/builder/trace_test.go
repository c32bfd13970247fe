package builder

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// A build's span is named after its first attribute (bounded, the flake
// author's), carries them all as a string array, and links to the plan and
// to the build it waited for; malformed links are dropped.
func TestTraceBuild(t *testing.T) {
	plan := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	after := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{3}, TraceFlags: trace.FlagsSampled})
	long := strings.Repeat("x", 1000)
	for _, tc := range []struct {
		name  string
		req   *nixbuspb.BuildRequest
		want  string
		links map[string]trace.SpanID
	}{
		{"one attr, both links", &nixbuspb.BuildRequest{Attrs: []string{"hello"}, PlanTraceparent: bus.TraceParent(plan), AfterTraceparent: bus.TraceParent(after)},
			"build hello", map[string]trace.SpanID{"plan": plan.SpanID(), "waited for": after.SpanID()}},
		{"aliases", &nixbuspb.BuildRequest{Attrs: []string{"hello", "hello-alias", "third"}, PlanTraceparent: bus.TraceParent(plan)},
			"build hello (+2)", map[string]trace.SpanID{"plan": plan.SpanID()}},
		{"long name, bad link", &nixbuspb.BuildRequest{Attrs: []string{long}, AfterTraceparent: "00-garbage"},
			"build " + bus.Truncate(long, maxSpanAttr), map[string]trace.SpanID{}},
		{"no attrs", &nixbuspb.BuildRequest{}, "build", map[string]trace.SpanID{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			defer func() { require.NoError(t, tp.Shutdown(context.WithoutCancel(t.Context()))) }()
			_, span := tp.Tracer("test").Start(t.Context(), "build")
			traceBuild(span, tc.req, "b1")
			span.End()
			s := rec.Ended()[0]
			require.Equal(t, tc.want, s.Name())
			require.LessOrEqual(t, len(s.Name()), len("build ")+maxSpanAttr)
			attrs := attribute.NewSet(s.Attributes()...)
			v, ok := attrs.Value("nixbus.attrs")
			require.True(t, ok)
			require.Equal(t, attribute.STRINGSLICE, v.Type())
			require.Equal(t, tc.req.GetAttrs(), append([]string(nil), v.AsStringSlice()...))
			links := map[string]trace.SpanID{}
			for _, l := range s.Links() {
				set := attribute.NewSet(l.Attributes...)
				kind, _ := set.Value("nixbus.link")
				links[kind.AsString()] = l.SpanContext.SpanID()
			}
			require.Equal(t, tc.links, links)
		})
	}
}
