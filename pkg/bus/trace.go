package bus

import (
	"context"
	"net/textproto"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Trace context rides in NATS headers as W3C traceparent and tracestate,
// so that one run is one trace, from the change event to the vote.
// Publisher.Publish writes the span context of its ctx into the message;
// Work reads it back and gives each handler a ctx whose span is its child.
// Nothing here is process-wide: the propagator is a stateless value and
// tracers come from the caller (a service's Deps), never from a global.

// Trace header names (W3C Trace Context).
const (
	TraceParentHeader = "traceparent"
	TraceStateHeader  = "tracestate"
)

// Span attributes the services share, so one query finds all of a run's
// or a change's spans whichever service made them.
const (
	AttrRun      = attribute.Key("nixbus.run_id")
	AttrDrv      = attribute.Key("nixbus.drv_path")
	AttrSystem   = attribute.Key("nixbus.system")
	AttrProject  = attribute.Key("gerrit.project")
	AttrChange   = attribute.Key("gerrit.change")
	AttrPatchset = attribute.Key("gerrit.patchset")
	AttrRef      = attribute.Key("git.ref")
)

var traceContext propagation.TraceContext

// headerCarrier adapts a NATS header to the propagator. NATS header keys
// are case-sensitive: nixbus writes the lower-case W3C names and also
// reads the canonical MIME form other clients may write.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string {
	if vs := c[key]; len(vs) > 0 {
		return vs[0]
	}
	if vs := c[textproto.CanonicalMIMEHeaderKey(key)]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[key] = []string{value} }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// deleteTrace removes the trace headers in either spelling, so a message
// never carries two contexts.
func deleteTrace(hdr nats.Header) {
	for _, k := range []string{TraceParentHeader, TraceStateHeader} {
		delete(hdr, k)
		delete(hdr, textproto.CanonicalMIMEHeaderKey(k))
	}
}

// InjectTrace writes the span context of ctx into hdr, replacing any trace
// headers hdr had. When ctx carries no valid span context hdr is left as
// it is.
func InjectTrace(ctx context.Context, hdr nats.Header) {
	if hdr == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	deleteTrace(hdr)
	traceContext.Inject(ctx, headerCarrier(hdr))
}

// TraceHeader is a new header holding only the trace context of ctx, or
// nil when ctx has none. Build it once and pass it to NewMsg for many
// messages of one span.
func TraceHeader(ctx context.Context) nats.Header {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	hdr := nats.Header{}
	traceContext.Inject(ctx, headerCarrier(hdr))
	return hdr
}

// SpanHeader is TraceHeader for a span context kept outside a ctx (a
// run's span, remembered across the messages of the run).
func SpanHeader(sc trace.SpanContext) nats.Header {
	if !sc.IsValid() {
		return nil
	}
	hdr := nats.Header{}
	traceContext.Inject(trace.ContextWithSpanContext(context.Background(), sc), headerCarrier(hdr))
	return hdr
}

// ExtractTrace returns ctx carrying the remote span context in hdr, or
// ctx itself when hdr holds none (or an invalid one).
func ExtractTrace(ctx context.Context, hdr nats.Header) context.Context {
	if hdr == nil {
		return ctx
	}
	return traceContext.Extract(ctx, headerCarrier(hdr))
}

// TraceOf is the span context in hdr; it is invalid when there is none.
func TraceOf(hdr nats.Header) trace.SpanContext {
	if hdr == nil {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(traceContext.Extract(context.Background(), headerCarrier(hdr)))
}

// TraceParent is sc as a W3C traceparent value, to carry a span context in
// a message field (a span link); empty when sc is not valid.
func TraceParent(sc trace.SpanContext) string {
	return SpanHeader(sc).Get(TraceParentHeader)
}

// ParseTraceParent reads a TraceParent value back; the span context is
// invalid when s is empty or malformed.
func ParseTraceParent(s string) trace.SpanContext {
	if s == "" {
		return trace.SpanContext{}
	}
	return TraceOf(nats.Header{TraceParentHeader: {s}})
}

// Tracer is tp's tracer for the named instrumentation (a service's import
// path), or a no-op tracer when tp is nil: a service without tracing still
// passes on the trace context it receives, at no other cost.
func Tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(name)
}

// StartSpan starts a consumer span for handling msg: its parent is the
// span context in msg's headers (a new root when there is none), and it
// carries the messaging attributes of msg plus attrs. A nil tr only
// extracts the parent, so what the handler publishes stays in the trace.
func StartSpan(ctx context.Context, tr trace.Tracer, name string, msg jetstream.Msg, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx = ExtractTrace(ctx, msg.Headers())
	if tr == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	base := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(msg.Subject()),
	}
	if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		base = append(base, semconv.MessagingMessageID(id))
	}
	if md, err := msg.Metadata(); err == nil {
		base = append(base, attribute.Int64("messaging.nats.delivery_count", int64(md.NumDelivered)))
	}
	return tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(append(base, attrs...)...))
}

// Fail marks span as failed with err (recorded as an exception event).
// A nil err changes nothing.
func Fail(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// EndSpan ends span, failed with err when err is not nil.
func EndSpan(span trace.Span, err error) {
	Fail(span, err)
	span.End()
}

// change is what ChangeAttrs reads of a change event (nixbuspb.ChangeEvent,
// whose getters are nil-safe); pkg/bus stays free of message types.
type change interface {
	GetProject() string
	GetChange() int64
	GetPatchset() int32
	GetRef() string
}

// ChangeAttrs are the span attributes naming the change ev is about.
func ChangeAttrs(ev change) []attribute.KeyValue {
	attrs := []attribute.KeyValue{AttrProject.String(ev.GetProject()), AttrRef.String(ev.GetRef())}
	if ev.GetChange() > 0 {
		attrs = append(attrs, AttrChange.Int64(ev.GetChange()), AttrPatchset.Int(int(ev.GetPatchset())))
	}
	return attrs
}
