package reporter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/prom"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Vote markers in the votes bucket, one key per run.
const (
	markPosting = "posting" // a reporter is posting the review
	markUnsure  = "unsure"  // a post failed: Gerrit may have applied it
	markPosted  = "posted"
)

// errClaimed says another reporter is posting this review right now; the
// message is retried later, when it has either finished or gone stale.
var errClaimed = errors.New("review is being posted by another reporter")

// claim takes the right to post the review under key, atomically, so two
// deliveries of one verdict (a redelivery, a second reporter, a replay)
// never both post. It reports false when the review was already given.
// unsure is true when an earlier attempt may have reached Gerrit: a post
// that failed, or a "posting" marker older than StaleClaim (a reporter
// that died mid-post), whose claim is taken over. The review is then
// looked for on the change before it is posted, so it is given once.
func (h *handler) claim(ctx context.Context, key string) (owned, unsure bool, err error) {
	_, err = h.votes.Create(ctx, key, []byte(markPosting))
	if err == nil {
		return true, false, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, false, fmt.Errorf("claim %s: %w", key, err)
	}
	entry, err := h.votes.Get(ctx, key)
	if err != nil {
		return false, false, fmt.Errorf("read claim %s: %w", key, err)
	}
	switch string(entry.Value()) {
	case markPosted:
		return false, false, nil
	case markPosting:
		if time.Since(entry.Created()) < h.s.cfg.StaleClaim {
			return false, false, errClaimed
		}
		h.s.logger.Warn("taking over a stale review claim", "run", key)
	}
	if _, err := h.votes.Update(ctx, key, []byte(markPosting), entry.Revision()); err != nil {
		return false, false, errClaimed // someone else took it over first
	}
	return true, true, nil
}

// unsure gives a claim back after a post that failed, so that the retry
// can take it at once, and looks for the review before posting again.
func (h *handler) unsure(ctx context.Context, key string) {
	if _, err := h.votes.Put(ctx, key, []byte(markUnsure)); err != nil {
		h.s.logger.Warn("mark review claim unsure", "run", key, "err", err)
	}
}

// Marker is the line that identifies a run's review on its change.
func Marker(runID string) string { return "nixbus-run: " + runID }

type handler struct {
	s     *Service
	votes jetstream.KeyValue
}

func (h *handler) handle(ctx context.Context, msg jetstream.Msg) error {
	var v nixbuspb.RunVerdict
	if err := bus.Decode(msg.Data(), &v); err != nil {
		return bus.Permanent(err)
	}
	if v.GetRunId() == "" || len(v.GetRunId()) > 128 {
		return bus.Permanent(errors.New("verdict without a valid run id"))
	}
	s := h.s
	s.metrics.verdicts.WithLabelValues(prom.EnumLabel(v.GetStatus())).Inc()
	logger := s.logger.With("run", v.GetRunId(), "change", v.GetChange().GetChange(), "patchset", v.GetChange().GetPatchset())
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(append(bus.ChangeAttrs(v.GetChange()), bus.AttrRun.String(v.GetRunId()),
		attribute.String("nixbus.run_status", v.GetStatus().String()))...)
	if v.GetStatus() == nixbuspb.RunStatus_RUN_STATUS_CANCELLED {
		// A superseded patchset gets no vote: its successor's run will.
		logger.Info("run cancelled, no vote", "superseded_by", v.GetSupersededBy())
		return nil
	}
	rev := v.GetRevision()
	if rev > 0 {
		logger = logger.With("revision", rev)
		span.SetAttributes(attribute.Int64("nixbus.verdict_revision", int64(rev)))
	}
	key := voteKey(v.GetRunId(), rev)
	if e, err := h.votes.Get(ctx, key); err == nil && string(e.Value()) == markPosted {
		logger.Info("verdict already reported")
		return nil
	}
	up, err := h.awaitUploads(ctx, &v, msg)
	if err != nil {
		return err
	}
	vote, message := review(&v, up, s.cfg)
	sum := summary(vote, &v)
	if rev > 0 {
		news, why, err := h.news(ctx, &v, sum)
		if err != nil || !news {
			if err == nil {
				logger.Info("no new review after the restart", "why", why)
			}
			return err
		}
		message += fmt.Sprintf("\nThis review replaces the run's earlier one: a failed job was restarted (revision %d).\n", rev)
	}
	owned, unsure, err := h.claim(ctx, key)
	if err != nil || !owned {
		if err == nil {
			span.SetAttributes(attribute.Bool("nixbus.already_reported", true))
			logger.Info("verdict already reported")
		}
		return err
	}
	if len(up.failed) > 0 {
		s.metrics.uploadFailures.Add(float64(len(up.failed)))
		span.SetAttributes(attribute.Int("nixbus.upload_failures", len(up.failed)))
		logger.Warn("uploads to the binary cache failed", "failed", len(up.failed), "built", up.built)
	}
	post := Post{
		Change: v.GetChange(), RunID: v.GetRunId(), Verified: vote, Tag: s.cfg.Tag,
		Message: message, Marker: marker(v.GetRunId(), rev), MaybePosted: unsure,
	}
	span.SetAttributes(attribute.Int("gerrit.verified", post.Verified))
	via, err := h.give(ctx, post)
	if err != nil {
		s.metrics.posts.WithLabelValues(via, "error").Inc()
		h.unsure(ctx, key)
		return fmt.Errorf("post review: %w", err)
	}
	s.metrics.posts.WithLabelValues(via, "ok").Inc()
	if at := v.GetChange().GetCreatedUnix(); at > 0 && rev == 0 {
		s.metrics.eventToVote.WithLabelValues(prom.EnumLabel(v.GetStatus())).Observe(time.Since(time.Unix(at, 0)).Seconds())
	}
	// The message is capped (MaxMessageBytes); the change is cut in case a
	// hostile verdict carried one as large as the verdict itself.
	rec := &nixbuspb.ReviewPosted{RunId: v.GetRunId(), Change: bus.CutChange(v.GetChange()), Verified: int32(post.Verified), Message: post.Message, Via: via,
		VerdictRevision: rev}
	if err := s.pub.Publish(ctx, bus.ReviewSubject(v.GetRunId()), bus.MsgIDReviewRevision(v.GetRunId(), rev), rec, nil); err != nil {
		return err
	}
	if err := h.remember(ctx, v.GetRunId(), rev, sum); err != nil {
		return err
	}
	if _, err := h.votes.Put(ctx, key, []byte(markPosted)); err != nil {
		return fmt.Errorf("write vote marker: %w", err)
	}
	logger.Info("review given", "via", via, "verified", post.Verified)
	return nil
}

// give posts to Gerrit when the run is for a patchset and Gerrit is
// configured; otherwise it prints the review.
func (h *handler) give(ctx context.Context, p Post) (via string, err error) {
	s := h.s
	ch := p.Change
	ctx, span := s.tracer.Start(ctx, "post review")
	defer func() {
		span.SetAttributes(attribute.String("nixbus.review_via", via))
		bus.EndSpan(span, err)
	}()
	// A patchset gets a vote, whether Gerrit or `nixbus trigger` started it.
	if s.gerrit != nil && ch.GetChange() > 0 && ch.GetPatchset() > 0 {
		start := time.Now()
		err = s.gerrit.Post(ctx, p)
		s.metrics.postSeconds.Observe(time.Since(start).Seconds())
		return "gerrit", err
	}
	_, err = fmt.Fprintf(s.out, "Verified %+d for %s\n%s\n", p.Verified, describe(ch, p.RunID), p.Message)
	return "stdout", err
}

func describe(ch *nixbuspb.ChangeEvent, runID string) string {
	switch {
	case ch.GetChange() > 0:
		return fmt.Sprintf("%s change %d patchset %d (run %s)", ch.GetProject(), ch.GetChange(), ch.GetPatchset(), runID)
	case ch.GetLocalPath() != "":
		return fmt.Sprintf("%s (run %s)", ch.GetLocalPath(), runID)
	default:
		return fmt.Sprintf("%s %s (run %s)", ch.GetProject(), ch.GetRef(), runID)
	}
}

// started posts the optional "build started" message of a patchset's run,
// once: the votes bucket remembers it like a vote.
func (h *handler) started(ctx context.Context, msg jetstream.Msg) error {
	var rs nixbuspb.RunStarted
	if err := bus.Decode(msg.Data(), &rs); err != nil {
		return bus.Permanent(err)
	}
	ch := rs.GetChange()
	trace.SpanFromContext(ctx).SetAttributes(append(bus.ChangeAttrs(ch), bus.AttrRun.String(rs.GetRunId()))...)
	if ch.GetChange() <= 0 || ch.GetPatchset() <= 0 || rs.GetRunId() == "" {
		return nil // post-merge and local runs have no patchset to talk to
	}
	key := rs.GetRunId() + "-started"
	owned, unsure, err := h.claim(ctx, key)
	if err != nil || !owned {
		return err
	}
	post := Post{
		Change: ch, RunID: rs.GetRunId(), Tag: h.s.cfg.Tag, NoVote: true,
		Marker: Marker(rs.GetRunId()) + " (started)", MaybePosted: unsure,
		Message: fmt.Sprintf("nixbus started building patchset %d (run %s).", ch.GetPatchset(), rs.GetRunId()),
	}
	if err := h.s.gerrit.Post(ctx, post); err != nil {
		h.s.metrics.posts.WithLabelValues("gerrit-started", "error").Inc()
		h.unsure(ctx, key)
		return fmt.Errorf("post started message: %w", err)
	}
	h.s.metrics.posts.WithLabelValues("gerrit-started", "ok").Inc()
	if _, err := h.votes.Put(ctx, key, []byte(markPosted)); err != nil {
		return fmt.Errorf("write started marker: %w", err)
	}
	return nil
}
