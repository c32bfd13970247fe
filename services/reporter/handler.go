package reporter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Vote markers in the votes bucket, one key per run.
const (
	markPosting = "posting"
	markPosted  = "posted"
)

type handler struct {
	s     *Service
	votes jetstream.KeyValue
}

func (h *handler) handle(ctx context.Context, msg jetstream.Msg) error {
	var v nixbuspb.RunVerdict
	if err := bus.Decode(msg.Data(), &v); err != nil {
		return bus.Permanent(err)
	}
	if v.GetRunId() == "" {
		return bus.Permanent(errors.New("verdict without run id"))
	}
	s := h.s
	s.metrics.verdicts.WithLabelValues(v.GetStatus().String()).Inc()
	logger := s.logger.With("run", v.GetRunId(), "change", v.GetChange().GetChange(), "patchset", v.GetChange().GetPatchset())
	if v.GetStatus() == nixbuspb.RunStatus_RUN_STATUS_CANCELLED {
		// A superseded patchset gets no vote: its successor's run will.
		logger.Info("run cancelled, no vote", "superseded_by", v.GetSupersededBy())
		return nil
	}
	// The marker is written before the post, so a redelivered verdict (a
	// second reporter, a restart) never posts a second vote once one went
	// out. The one gap: a crash after Gerrit took the post and before the
	// marker says "posted"; the retry then posts again rather than lose it.
	key := v.GetRunId()
	if entry, err := h.votes.Get(ctx, key); err == nil && string(entry.Value()) == markPosted {
		logger.Info("verdict already reported")
		return nil
	} else if err != nil && !bus.IsNotFound(err) {
		return fmt.Errorf("read vote marker: %w", err)
	}
	if _, err := h.votes.Put(ctx, key, []byte(markPosting)); err != nil {
		return fmt.Errorf("write vote marker: %w", err)
	}
	post := Post{
		Change:   v.GetChange(),
		RunID:    v.GetRunId(),
		Verified: Vote(&v),
		Message:  Message(&v, s.cfg.LogBaseURL, s.cfg.FailedListLimit),
		Tag:      s.cfg.Tag,
	}
	via, err := h.give(ctx, post)
	if err != nil {
		s.metrics.posts.WithLabelValues(via, "error").Inc()
		return fmt.Errorf("post review: %w", err)
	}
	s.metrics.posts.WithLabelValues(via, "ok").Inc()
	rec := &nixbuspb.ReviewPosted{RunId: v.GetRunId(), Change: v.GetChange(), Verified: int32(post.Verified), Message: post.Message, Via: via}
	if err := s.pub.Publish(ctx, bus.ReviewSubject(v.GetRunId()), bus.MsgIDReview(v.GetRunId()), rec, nil); err != nil {
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
func (h *handler) give(ctx context.Context, p Post) (string, error) {
	s := h.s
	ch := p.Change
	// A patchset gets a vote, whether Gerrit or `nixbus trigger` started it.
	if s.gerrit != nil && ch.GetChange() > 0 && ch.GetPatchset() > 0 {
		start := time.Now()
		err := s.gerrit.Post(ctx, p)
		s.metrics.postSeconds.Observe(time.Since(start).Seconds())
		return "gerrit", err
	}
	_, err := fmt.Fprintf(s.out, "Verified %+d for %s\n%s\n", p.Verified, describe(ch, p.RunID), p.Message)
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
