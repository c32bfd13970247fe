package evaluator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/evaluator/internal/eval"
)

type handler struct {
	s    *Service
	runs jetstream.Stream
}

// outcome is what evaluating one change gave: its jobs and graph chunks
// are published, EvalDone is not.
type outcome struct {
	jobs    int
	chunks  int
	dropped int
	// failure is the whole evaluation's error, for EvalDone.error.
	failure string
}

// handle evaluates one change event. Every message it publishes has an id
// derived from the event, so a redelivered event publishes nothing twice;
// an event whose run is already evaluated is acknowledged at once.
func (h *handler) handle(ctx context.Context, msg jetstream.Msg) error {
	var ev nixbuspb.ChangeEvent
	if err := bus.Decode(msg.Data(), &ev); err != nil {
		return bus.Permanent(err)
	}
	if ev.EventId == "" {
		return bus.Permanent(errors.New("change event without event_id"))
	}
	run := bus.RunID(ev.EventId)
	logger := h.s.logger.With("run", run, "change", ev.Change, "patchset", ev.Patchset)
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(append(bus.ChangeAttrs(&ev), bus.AttrRun.String(run))...)
	// Every message of the run is the child of this evaluation's span; the
	// planner carries RunStarted's context on to builds and the verdict.
	hdr := bus.TraceHeader(ctx)

	done, err := h.evaluated(ctx, run)
	if err != nil {
		return err
	}
	if done {
		logger.Info("run already evaluated")
		return nil
	}
	started := &nixbuspb.RunStarted{RunId: run, Change: &ev, StartedUnixMs: time.Now().UnixMilli()}
	if err := h.s.pub.Publish(ctx, bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run), started, hdr); err != nil {
		return err
	}
	logger.Info("evaluation started", "subject", msg.Subject())
	h.s.metrics.running.Inc()
	defer h.s.metrics.running.Dec()

	begin := time.Now()
	out, err := h.evaluate(ctx, &ev, run, hdr, logger)
	if err != nil {
		return err
	}
	duration := time.Since(begin)
	evalDone := &nixbuspb.EvalDone{
		RunId: run, JobCount: int64(out.jobs), Error: out.failure,
		DurationMs: duration.Milliseconds(), DroppedJobs: int64(out.dropped), GraphChunks: int32(out.chunks),
	}
	if err := h.s.pub.Publish(ctx, bus.RunSubject(run, bus.RunEvalKind), bus.MsgIDEvalDone(run), evalDone, hdr); err != nil {
		return err
	}
	span.SetAttributes(attribute.Int("nixbus.jobs", out.jobs), attribute.Int("nixbus.jobs_dropped", out.dropped))
	result := "ok"
	if out.failure != "" {
		result = "error"
		span.SetStatus(codes.Error, out.failure)
		logger.Warn("evaluation failed", "err", out.failure)
	}
	h.s.metrics.runs.WithLabelValues(result).Inc()
	logger.Info("evaluation done", "jobs", out.jobs, "dropped", out.dropped, "duration", duration)
	return nil
}

// evaluated reports whether run's EvalDone is already on the runs stream.
func (h *handler) evaluated(ctx context.Context, run string) (bool, error) {
	found, _, err := bus.LastRunMessage(ctx, h.runs, run, bus.RunEvalKind, nil)
	return found, err
}

// evaluate finds the flake, evaluates it and publishes its jobs as they
// come, then the derivation graph between them. A returned error is the
// bus's or the process's (retry the event); what went wrong with the
// change itself is in outcome.failure.
func (h *handler) evaluate(ctx context.Context, ev *nixbuspb.ChangeEvent, run string, hdr nats.Header, logger *slog.Logger) (outcome, error) {
	cfg := h.s.cfg
	if err := os.MkdirAll(cfg.workDir(), 0o755); err != nil {
		return outcome{}, fmt.Errorf("create work dir: %w", err)
	}
	workDir, err := os.MkdirTemp(cfg.workDir(), "run-"+run+"-")
	if err != nil {
		return outcome{}, fmt.Errorf("create run dir: %w", err)
	}
	defer func() {
		if err := removeAll(workDir); err != nil {
			logger.Warn("remove run dir", "err", err)
		}
	}()

	ectx, cancel := context.WithTimeout(ctx, cfg.EvalTimeout)
	defer cancel()
	win, stop := h.runWindow(ctx, run)
	defer stop()
	st := h.newJobStream(run, hdr, win, logger)
	out, err := h.evaluateIn(ctx, ectx, ev, st, workDir)
	if ctx.Err() != nil {
		return outcome{}, ctx.Err()
	}
	// Whatever went wrong, the run's EvalDone must fit on the bus: a
	// failure that did not would be retried forever and the run would
	// never get a verdict.
	out.failure = bus.Truncate(out.failure, maxErrorBytes)
	return out, err
}

// evaluateIn evaluates within ectx (ctx and the evaluation timeout),
// publishing through st. On the timeout, the jobs evaluated before it are
// kept and the timeout is the run's eval error.
func (h *handler) evaluateIn(ctx, ectx context.Context, ev *nixbuspb.ChangeEvent, st *jobStream, workDir string) (outcome, error) {
	logger := st.logger
	timedOut := func() string {
		return fmt.Sprintf("evaluation timed out after %s", h.s.cfg.EvalTimeout)
	}
	flakeDir, failure, err := h.flakeDir(ectx, ev, workDir)
	if ctx.Err() != nil {
		return outcome{}, ctx.Err()
	}
	if ectx.Err() != nil {
		return outcome{failure: timedOut()}, nil
	}
	if err != nil || failure != "" {
		return outcome{failure: failure}, err
	}
	installable := "path:" + flakeDir + "#hydraJobs"
	begin := time.Now()
	// The stream publishes while the evaluator runs; if it cannot (the
	// bus), the evaluation stops and the event is tried again.
	sctx, stop := context.WithCancelCause(ectx)
	defer stop(nil)
	var streamErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if streamErr = st.consume(ctx); streamErr != nil {
			stop(streamErr)
		}
	})
	sctx, span := h.s.tracer.Start(sctx, "eval", trace.WithAttributes(attribute.String("nix.installable", installable)))
	res, err := h.runEvaluator(sctx, installable, workDir, st.emitter(sctx), logger)
	close(st.recs)
	wg.Wait()
	h.s.metrics.garbage.Add(float64(res.Garbage))
	span.SetAttributes(attribute.String("nixbus.evaluator", res.Evaluator), attribute.Int("nixbus.records", st.records))
	// A failed evaluation still reports the jobs it got to.
	evalFailure, failed := eval.IsFailure(err)
	switch {
	case ctx.Err() != nil:
		bus.EndSpan(span, ctx.Err())
		return outcome{}, ctx.Err()
	case streamErr != nil:
		bus.EndSpan(span, streamErr)
		return outcome{}, streamErr
	case ectx.Err() != nil:
		evalFailure, failed = timedOut(), true
		if st.records > 0 {
			evalFailure += fmt.Sprintf(" (after %d attributes)", st.records)
		}
		logger.Warn("evaluation timed out, reporting the jobs evaluated before", "records", st.records)
	case err != nil && !failed:
		bus.EndSpan(span, err)
		return outcome{}, err
	}
	if failed {
		span.SetStatus(codes.Error, evalFailure)
	}
	span.End()
	h.s.metrics.evalSeconds.WithLabelValues(res.Evaluator).Observe(time.Since(begin).Seconds())

	gctx, gspan := h.s.tracer.Start(ctx, "publish graph", trace.WithAttributes(attribute.Int("nixbus.jobs", st.jobs)))
	out := outcome{jobs: st.jobs, dropped: st.dropped}
	out.chunks, out.failure, err = st.publishGraph(gctx)
	if out.failure != "" {
		gspan.SetStatus(codes.Error, out.failure)
	}
	bus.EndSpan(gspan, err)
	if err != nil {
		return outcome{}, err
	}
	if failed {
		out.failure = evalFailure
	}
	return out, nil
}

// flakeDir is the directory holding the change's flake.nix: the event's
// local checkout as is, or a checkout the Fetcher makes in workDir.
func (h *handler) flakeDir(ctx context.Context, ev *nixbuspb.ChangeEvent, workDir string) (dir, failure string, err error) {
	if ev.LocalPath != "" {
		abs, err := filepath.Abs(ev.LocalPath)
		if err != nil {
			return "", fmt.Sprintf("local path %q: %v", ev.LocalPath, err), nil
		}
		if st, err := os.Stat(abs); err != nil || !st.IsDir() {
			return "", fmt.Sprintf("local path %q is not a directory", ev.LocalPath), nil
		}
		return abs, "", nil
	}
	if h.s.fetcher == nil {
		return "", fmt.Sprintf("cannot fetch %s %s: this evaluator has no fetcher and the event has no local path", ev.RepoUrl, ev.Ref), nil
	}
	src := filepath.Join(workDir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return "", "", fmt.Errorf("create checkout dir: %w", err)
	}
	fctx, span := h.s.tracer.Start(ctx, "fetch", trace.WithAttributes(attribute.String("git.url", ev.RepoUrl), bus.AttrRef.String(ev.Ref)))
	dir, err = h.s.fetcher.Fetch(fctx, ev, src)
	bus.EndSpan(span, err)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", fmt.Sprintf("fetch %s %s: %v", ev.RepoUrl, ev.Ref, err), nil
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", fmt.Sprintf("checkout dir: %v", err), nil
	}
	return dir, "", nil
}

// runEvaluator runs nix-eval-jobs when there is one, else the built-in
// evaluator.
func (h *handler) runEvaluator(ctx context.Context, installable, workDir string, emit func(eval.Record), logger *slog.Logger) (eval.Result, error) {
	cfg := h.s.cfg
	bin := cfg.NixEvalJobs
	if bin == "" && !cfg.Builtin {
		bin, _ = exec.LookPath("nix-eval-jobs")
	}
	if bin == "" || cfg.Builtin {
		b := &eval.Builtin{Nix: h.s.evalNix, Workers: cfg.Workers, GCRootsDir: cfg.GCRootsDir, ScratchDir: workDir, Emit: emit, Logger: logger}
		return b.Eval(ctx, installable)
	}
	roots := cfg.GCRootsDir
	if roots == "" {
		roots = filepath.Join(workDir, "gcroots")
	}
	if err := os.MkdirAll(roots, 0o755); err != nil {
		return eval.Result{}, fmt.Errorf("create gc roots dir: %w", err)
	}
	e := &eval.NixEvalJobs{
		Bin: bin, Nix: h.s.nix, Workers: cfg.Workers, MaxMemoryMB: cfg.MaxMemoryMB, GCRootsDir: roots, Emit: emit, Logger: logger,
	}
	return e.Eval(ctx, installable)
}

// removeAll removes dir, first making read-only directories writable (a
// checkout or nix may leave some).
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
