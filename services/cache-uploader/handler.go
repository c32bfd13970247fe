package cacheuploader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/nix"
	"nixbus.dev/nixbus/pkg/storepath"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

type handler struct {
	s     *Service
	batch *batcher
	// runs is the runs stream, where a run's RunStarted names its change.
	runs jetstream.Stream
}

// handle uploads the outputs of one successful build and publishes the
// upload result. Signing and copying are idempotent, and the result's
// message id makes a repeated publication a no-op, so a redelivered build
// result costs a little time and changes nothing.
func (h *handler) handle(ctx context.Context, msg jetstream.Msg) error {
	s := h.s
	var res nixbuspb.BuildResult
	if err := bus.Decode(msg.Data(), &res); err != nil {
		return bus.Permanent(err)
	}
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(bus.AttrRun.String(res.GetRunId()), bus.AttrDrv.String(res.GetDrvPath()))
	if res.GetStatus() != nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED {
		span.SetAttributes(attribute.String("nixbus.upload.skipped", "build did not succeed"))
		return nil
	}
	if len(s.cfg.Builders) > 0 && !slices.Contains(s.cfg.Builders, res.GetBuilder()) {
		// Built on another host: its outputs are not in this store, and
		// that host's uploaders take it.
		span.SetAttributes(attribute.String("nixbus.upload.skipped", "built by "+res.GetBuilder()+" on another host"))
		return nil
	}
	run, _, err := bus.ParseRunSubject(msg.Subject())
	if err != nil {
		return bus.Permanent(err)
	}
	if res.GetRunId() != run {
		return bus.Permanent(fmt.Errorf("build result of run %q on subject %s", res.GetRunId(), msg.Subject()))
	}
	logger := s.logger.With("run", run, "drv", res.GetDrvPath())
	paths := slices.Sorted(maps.Values(res.GetOutputs()))
	up := &nixbuspb.UploadResult{RunId: run, DrvPath: res.GetDrvPath(), StorePaths: paths, CacheUrl: s.cfg.CacheURL}
	span.SetAttributes(attribute.StringSlice("nix.store_paths", paths), attribute.String("nix.cache_url", s.cfg.CacheURL))
	var start time.Time
	if err := h.check(paths); err != nil {
		up.Error = err.Error()
	} else {
		// Links first: a gc root also keeps the outputs through the upload.
		h.link(ctx, logger, &res)
		start = time.Now()
		if err := h.batch.upload(ctx, paths); err != nil {
			if ctx.Err() != nil {
				return err
			}
			if md, merr := msg.Metadata(); merr == nil && md.NumDelivered < uint64(s.cfg.MaxAttempts) {
				return err
			}
			up.Error = errorLine(err)
		} else {
			up.Ok = true
		}
	}
	if err := h.publish(ctx, up); err != nil {
		return err
	}
	if !up.GetOk() {
		span.SetStatus(codes.Error, up.GetError())
	}
	if up.GetOk() {
		s.metrics.duration.Observe(time.Since(start).Seconds())
		logger.Info("outputs uploaded", "paths", len(paths))
	} else {
		logger.Warn("upload failed", "err", up.GetError())
	}
	return nil
}

// check refuses output lists that cannot be uploaded.
func (h *handler) check(paths []string) error {
	if len(paths) == 0 {
		return errors.New("the build result lists no outputs")
	}
	for _, p := range paths {
		if err := h.s.checkPath(p); err != nil {
			return err
		}
	}
	return nil
}

// checkPath refuses what is not a path in the store.
func (s *Service) checkPath(p string) error {
	return storepath.Check(s.cfg.StoreDir, p)
}

// link gives the outputs of a post-merge build of the default branch
// their gc roots and output links. Nothing here may cost the upload: a
// failure is logged and counted, and the upload goes on.
func (h *handler) link(ctx context.Context, logger *slog.Logger, res *nixbuspb.BuildResult) {
	s := h.s
	if !s.cfg.linksOn() || len(res.GetAttrs()) == 0 {
		return
	}
	dirs := []struct {
		kind, path string
		root       bool
	}{{"gcroots", s.cfg.GCRootsDir, true}, {"outputs", s.cfg.OutputsDir, false}}
	ev, order, err := h.runChange(ctx, res.GetRunId())
	if err != nil {
		if ctx.Err() == nil {
			logger.Warn("run change lookup", "err", err)
			for _, d := range dirs {
				if d.path != "" {
					s.metrics.links.WithLabelValues(d.kind, "failed").Add(float64(len(res.GetAttrs())))
				}
			}
		}
		return
	}
	if !s.cfg.postMerge(ev) {
		return
	}
	for _, d := range dirs {
		if d.path == "" {
			continue
		}
		for _, attr := range res.GetAttrs() {
			placed, err := s.links.place(ctx, d.path, d.root, ev.GetProject(), attr, res.GetOutputs(), order)
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				s.metrics.links.WithLabelValues(d.kind, "failed").Inc()
				logger.Warn("post-merge links failed", "links", d.kind, "attr", attr, "err", err)
			case !placed:
				s.metrics.links.WithLabelValues(d.kind, "older").Inc()
				logger.Info("post-merge links kept for a newer run", "links", d.kind, "attr", attr)
			default:
				s.metrics.links.WithLabelValues(d.kind, "placed").Inc()
				logger.Info("post-merge links updated", "links", d.kind, "attr", attr)
			}
		}
	}
}

// runChange is the change a run builds, from the run's RunStarted, and
// the stream sequence of that message, which orders runs.
func (h *handler) runChange(ctx context.Context, run string) (*nixbuspb.ChangeEvent, uint64, error) {
	var rs nixbuspb.RunStarted
	found, seq, err := bus.LastRunMessage(ctx, h.runs, run, bus.RunStartedKind, &rs)
	if err != nil {
		return nil, 0, err
	}
	if !found || rs.GetChange() == nil {
		return nil, 0, fmt.Errorf("run %s has no start naming its change", run)
	}
	return rs.GetChange(), seq, nil
}

// errorLine is nix's own first error line, for the upload result.
func errorLine(err error) string {
	var ne *nix.Error
	if errors.As(err, &ne) {
		if msg := nix.ErrorMessage(ne.Stderr); msg != "" {
			line, _, _ := strings.Cut(msg, "\n")
			return strings.TrimSpace(strings.TrimPrefix(line, "error:"))
		}
	}
	return err.Error()
}

// publish stores the upload result as the child of the upload's span.
func (h *handler) publish(ctx context.Context, up *nixbuspb.UploadResult) error {
	if err := h.s.pub.Publish(ctx, bus.UploadSubject(up.GetRunId()), bus.MsgIDUpload(up.GetRunId(), up.GetDrvPath()), up, nil); err != nil {
		return fmt.Errorf("publish upload result of %s: %w", up.GetDrvPath(), err)
	}
	result := "ok"
	if !up.GetOk() {
		result = "failed"
	}
	h.s.metrics.uploads.WithLabelValues(result).Inc()
	return nil
}
