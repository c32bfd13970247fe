package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/prom"
	"nixbus.dev/nixbus/pkg/storepath"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/builder/internal/nixbuild"
)

type handler struct {
	s    *Service
	logs jetstream.ObjectStore
	runs jetstream.Stream
	// cancelSub brings cancellations (see runCancelled).
	cancelSub *nats.Subscription
}

// handle builds one request and publishes its result. It returns nil only
// once the result is stored. If the builder is shutting down, the build is
// killed, nothing is published and the request goes back to the queue.
func (h *handler) handle(ctx context.Context, msg jetstream.Msg) error {
	s := h.s
	var req nixbuspb.BuildRequest
	if err := bus.Decode(msg.Data(), &req); err != nil {
		return bus.Permanent(err)
	}
	if err := h.check(&req); err != nil {
		return bus.Permanent(err)
	}
	logger := s.logger.With("run", req.GetRunId(), "drv", req.GetDrvPath())
	span := trace.SpanFromContext(ctx)
	traceBuild(span, &req, s.cfg.Name)
	if len(req.GetAttrs()) > 0 {
		logger = logger.With("attr", req.GetAttrs()[0])
	}

	bctx, cancelBuild := context.WithCancelCause(ctx)
	defer cancelBuild(nil)
	unregister, cancelled := s.cancels.register(req.GetRunId(), cancelBuild)
	defer unregister()
	if !cancelled {
		var err error
		if cancelled, err = h.runCancelled(ctx, req.GetRunId()); err != nil {
			return err
		}
	}
	res := &nixbuspb.BuildResult{
		RunId: req.GetRunId(), DrvPath: req.GetDrvPath(), System: req.GetSystem(), Attrs: req.GetAttrs(),
		Builder: s.cfg.Name, RestartSeq: req.GetRestartSeq(),
	}
	if cancelled {
		res.Status, res.Error = nixbuspb.BuildStatus_BUILD_STATUS_CANCELLED, "run cancelled"
		return h.publish(ctx, res)
	}

	logger.Info("build started")
	start := time.Now()
	if meta, err := msg.Metadata(); err == nil && meta.NumDelivered == 1 {
		s.metrics.waited.WithLabelValues(s.cfg.System).Observe(start.Sub(meta.Timestamp).Seconds())
	}
	s.metrics.running.WithLabelValues(s.cfg.System).Inc()
	tctx, cancelTimeout := context.WithTimeout(bctx, s.cfg.Timeout)
	defer cancelTimeout()
	var delivery uint64
	if meta, err := msg.Metadata(); err == nil {
		delivery = meta.NumDelivered
	}
	out, logFile, err := h.buildRetrying(ctx, tctx, &req, delivery, logger)
	s.metrics.running.WithLabelValues(s.cfg.System).Dec()
	res.DurationMs = time.Since(start).Milliseconds()
	if logFile != nil {
		defer h.removeLog(logFile)
	}
	if ctx.Err() != nil {
		// Shutting down: the request goes to another builder.
		logger.Info("build interrupted by shutdown")
		return fmt.Errorf("build %s: interrupted: %w", req.GetDrvPath(), ctx.Err())
	}
	if err != nil && !errors.Is(context.Cause(bctx), errRunCancelled) {
		return fmt.Errorf("build %s: %w", req.GetDrvPath(), err)
	}
	h.classify(bctx, tctx, res, out)
	if logFile != nil {
		key, err := h.storeLog(ctx, bus.LogKey(req.GetRunId(), req.GetDrvPath()), logFile)
		if err != nil {
			return err
		}
		res.LogKey = key
		if s.cfg.LogBaseURL != "" {
			span.SetAttributes(attribute.String("nixbus.log_url", bus.LogURL(s.cfg.LogBaseURL, key)))
		}
	}
	logger.Info("build finished", "status", res.GetStatus().String(), "err", res.GetError(), "duration", time.Duration(res.GetDurationMs())*time.Millisecond)
	span.SetAttributes(attribute.Int("nix.exit_code", int(res.GetExitCode())))
	if st := res.GetStatus(); st == nixbuspb.BuildStatus_BUILD_STATUS_FAILED || st == nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT {
		// The handler did its job, but the build did not: show it red.
		span.SetStatus(codes.Error, res.GetError())
	}
	if err := h.publish(ctx, res); err != nil {
		return err
	}
	s.metrics.duration.WithLabelValues(s.cfg.System, statusLabel(res.GetStatus())).Observe(float64(res.GetDurationMs()) / 1000)
	return nil
}

// maxSpanAttr bounds the attribute name in a build span's name (names are
// the flake author's).
const maxSpanAttr = 128

// traceBuild names a build's span after its first attribute ("build
// hello"), gives it the request's attributes, and links it to the run's
// plan and to the build whose result released it.
func traceBuild(span trace.Span, req *nixbuspb.BuildRequest, builder string) {
	if !span.IsRecording() {
		return
	}
	if attrs := req.GetAttrs(); len(attrs) > 0 {
		name := "build " + bus.Truncate(attrs[0], maxSpanAttr)
		if len(attrs) > 1 {
			name += fmt.Sprintf(" (+%d)", len(attrs)-1)
		}
		span.SetName(name)
	}
	span.SetAttributes(bus.AttrRun.String(req.GetRunId()), bus.AttrDrv.String(req.GetDrvPath()),
		bus.AttrSystem.String(req.GetSystem()), attribute.String("nixbus.builder", builder),
		attribute.StringSlice("nixbus.attrs", req.GetAttrs()))
	for _, l := range []struct{ kind, traceparent string }{
		{"plan", req.GetPlanTraceparent()},
		{"waited for", req.GetAfterTraceparent()},
	} {
		if sc := bus.ParseTraceParent(l.traceparent); sc.IsValid() {
			span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("nixbus.link", l.kind)}})
		}
	}
}

// check refuses requests that can never be built.
func (h *handler) check(req *nixbuspb.BuildRequest) error {
	if !bus.ValidRunID(req.GetRunId()) {
		return fmt.Errorf("build request: bad run id %q", req.GetRunId())
	}
	if err := storepath.CheckDrv(h.s.cfg.StoreDir, req.GetDrvPath()); err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	return nil
}

// runCancelled looks for a cancellation of run on the runs stream, unless
// an earlier lookup found none and the subscription to cancellations has
// missed nothing since (what it brings is in s.cancels already).
func (h *handler) runCancelled(ctx context.Context, run string) (bool, error) {
	gen, ok := h.cancelGen()
	if ok && h.s.cancels.known(run, gen, time.Now()) {
		return false, nil
	}
	h.s.metrics.cancelLookups.Inc()
	found, _, err := bus.LastRunMessage(ctx, h.runs, run, bus.RunCancelKind, nil)
	if err == nil && !found && ok {
		h.s.cancels.looked(run, gen, time.Now())
	}
	return found, err
}

// cancelGen numbers the states of the subscription to cancellations: the
// number changes when the connection was re-established or the
// subscription dropped a message. ok is false when it cannot tell.
func (h *handler) cancelGen() (gen uint64, ok bool) {
	if h.cancelSub == nil {
		return 0, false
	}
	dropped, err := h.cancelSub.Dropped()
	if err != nil || !h.cancelSub.IsValid() {
		return 0, false
	}
	return h.s.js.Conn().Stats().Reconnects<<32 ^ uint64(dropped), true
}

// build runs the executor with the time limit (tctx), the log going to a
// file in the run's directory (none in instant mode) and, as it grows, to
// the bus (see liveLog; ctx bounds that).
// build runs one attempt; delivery 0 streams no live log.
func (h *handler) build(ctx, tctx context.Context, req *nixbuspb.BuildRequest, delivery uint64) (nixbuild.Outcome, *os.File, error) {
	s := h.s
	dir := filepath.Join(s.cfg.WorkDir, req.GetRunId())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nixbuild.Outcome{}, nil, fmt.Errorf("create run dir: %w", err)
	}
	// A run still building is not pruned.
	now := time.Now()
	if err := os.Chtimes(dir, now, now); err != nil {
		return nixbuild.Outcome{}, nil, fmt.Errorf("touch run dir: %w", err)
	}
	name := strings.TrimSuffix(filepath.Base(req.GetDrvPath()), ".drv")
	var logFile *os.File
	if !s.cfg.Instant {
		f, err := os.CreateTemp(dir, name+".*.log")
		if err != nil {
			return nixbuild.Outcome{}, nil, fmt.Errorf("create log: %w", err)
		}
		logFile = f
	}
	spec := nixbuild.Spec{DrvPath: req.GetDrvPath(), OutLink: filepath.Join(dir, name), Outputs: req.GetOutputs()}
	var live *liveLog
	if delivery > 0 {
		live = h.startLive(ctx, req, delivery, logFile)
	}
	out, err := s.exec.Build(tctx, spec, logFile)
	live.finish(ctx)
	return out, logFile, err
}

// buildRetrying builds, and builds again after a transient infrastructure
// failure (out.Transient), at most MaxRetries times with a doubling
// backoff. A build's own failure, a cancelled run and the time limit
// (tctx) end it at once. The log returned is the last attempt's; only
// the first attempt streams its log live (a retry would reuse its
// attempt's chunk ids).
func (h *handler) buildRetrying(ctx, tctx context.Context, req *nixbuspb.BuildRequest, delivery uint64, logger *slog.Logger) (nixbuild.Outcome, *os.File, error) {
	s := h.s
	backoff := s.cfg.RetryBackoff
	for attempt := 0; ; attempt++ {
		out, logFile, err := h.build(ctx, tctx, req, delivery)
		if err != nil || out.Transient == "" || out.ExitCode == 0 || attempt >= s.cfg.MaxRetries || tctx.Err() != nil {
			return out, logFile, err
		}
		logger.Warn("transient build failure, building again", "attempt", attempt+1, "reason", out.Transient, "err", out.Error, "backoff", backoff)
		s.metrics.retries.WithLabelValues(s.cfg.System, out.Transient).Inc()
		if logFile != nil {
			h.removeLog(logFile)
		}
		t := time.NewTimer(backoff)
		select {
		case <-tctx.Done():
			t.Stop()
			return out, nil, nil
		case <-t.C:
		}
		backoff *= 2
		delivery = 0
	}
}

// classify fills in the result's status from how the build ended.
// bctx is cancelled when the run is; tctx is bctx with the time limit.
func (h *handler) classify(bctx, tctx context.Context, res *nixbuspb.BuildResult, out nixbuild.Outcome) {
	res.ExitCode = int32(out.ExitCode)
	switch {
	case errors.Is(context.Cause(bctx), errRunCancelled):
		res.Status, res.Error = nixbuspb.BuildStatus_BUILD_STATUS_CANCELLED, "run cancelled"
	case errors.Is(tctx.Err(), context.DeadlineExceeded) && out.ExitCode != 0:
		res.Status, res.Error = nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT, fmt.Sprintf("build timed out after %s", h.s.cfg.Timeout)
	case out.SilenceTimeout:
		res.Status, res.Error = nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT, out.Error
	case out.ExitCode != 0:
		res.Status, res.Error = nixbuspb.BuildStatus_BUILD_STATUS_FAILED, out.Error
		if res.Error == "" {
			res.Error = fmt.Sprintf("nix build exited with code %d", out.ExitCode)
		}
	default:
		res.Status, res.Outputs = nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, out.Outputs
	}
	if res.Status == nixbuspb.BuildStatus_BUILD_STATUS_FAILED || res.Status == nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT {
		// Retries ran out (or the time limit came first): the planner
		// must not remember this as the build's own failure.
		res.Transient = out.Transient
	}
}

// storeLog puts the log in the object store, keeping its head and tail
// when it is over MaxLogBytes.
func (h *handler) storeLog(ctx context.Context, key string, f *os.File) (string, error) {
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat log: %w", err)
	}
	var r io.Reader = io.NewSectionReader(f, 0, st.Size())
	if limit := h.s.cfg.MaxLogBytes; st.Size() > limit {
		half := limit / 2
		r = io.MultiReader(
			io.NewSectionReader(f, 0, half),
			strings.NewReader(fmt.Sprintf("\n[nixbus: %d bytes of log left out]\n", st.Size()-2*half)),
			io.NewSectionReader(f, st.Size()-half, half),
		)
	}
	if _, err := h.logs.Put(ctx, jetstream.ObjectMeta{Name: key}, r); err != nil {
		return "", fmt.Errorf("store log %s: %w", key, err)
	}
	return key, nil
}

func (h *handler) removeLog(f *os.File) {
	if err := f.Close(); err != nil {
		h.s.logger.Warn("close log", "err", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		h.s.logger.Warn("remove log", "err", err)
	}
}

// publish stores the result as the child of the build's span (in ctx).
func (h *handler) publish(ctx context.Context, res *nixbuspb.BuildResult) error {
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("nixbus.build.status", statusLabel(res.GetStatus())))
	if err := h.s.pub.Publish(ctx, bus.RunSubject(res.GetRunId(), bus.RunResultKind), bus.MsgIDRebuildResult(res.GetRunId(), res.GetDrvPath(), res.GetRestartSeq()), res, nil); err != nil {
		return fmt.Errorf("publish result of %s: %w", res.GetDrvPath(), err)
	}
	h.s.metrics.results.WithLabelValues(h.s.cfg.System, statusLabel(res.GetStatus())).Inc()
	return nil
}

func statusLabel(s nixbuspb.BuildStatus) string {
	return prom.EnumLabel(s)
}
