package reporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// A run whose failed job an admin restarted gets a new verdict once the
// rebuild and what it released are done (RunVerdict.revision, the
// RestartJob's stream sequence). Its review is posted only when it says
// something new: a vote or a list of failed jobs other than the run's last
// review had. Each revision has its own key in the votes bucket, so it is
// posted at most once however often it is delivered, and the run's last
// review is kept there (lastKey) to compare with. A revision older than
// the run's newest verdict is not posted: the newer one will be.

// voteKey is the votes bucket key of a run's verdict of revision rev.
func voteKey(runID string, rev uint64) string {
	if rev == 0 {
		return runID
	}
	return runID + ".rev-" + strconv.FormatUint(rev, 10)
}

// lastKey holds "<revision> <summary>" of the run's last review.
func lastKey(runID string) string { return runID + ".last" }

// marker is Marker for a verdict of revision rev: each revision's review
// is told apart on the change.
func marker(runID string, rev uint64) string {
	if rev == 0 {
		return Marker(runID)
	}
	return fmt.Sprintf("%s revision %d", Marker(runID), rev)
}

// summary is what makes a review news: its vote and its failed jobs.
func summary(vote int, v *nixbuspb.RunVerdict) string {
	lines := make([]string, 0, len(v.GetFailed()))
	for _, o := range v.GetFailed() {
		lines = append(lines, o.GetAttr()+"\x00"+o.GetStatus().String()+"\x00"+o.GetFailure().String())
	}
	slices.Sort(lines)
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%d\x00%d\x00", vote, v.GetFailedCount(), v.GetSkippedCount())
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

type lastReview struct {
	rev     uint64
	summary string
}

// last is the run's last review, if the bucket has it.
func (h *handler) last(ctx context.Context, runID string) (lastReview, uint64, bool, error) {
	e, err := h.votes.Get(ctx, lastKey(runID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return lastReview{}, 0, false, nil
	}
	if err != nil {
		return lastReview{}, 0, false, fmt.Errorf("read last review of %s: %w", runID, err)
	}
	rev, sum, _ := strings.Cut(string(e.Value()), " ")
	n, err := strconv.ParseUint(rev, 10, 64)
	if err != nil {
		return lastReview{}, e.Revision(), false, nil // unreadable: as if none
	}
	return lastReview{n, sum}, e.Revision(), true, nil
}

// remember records the run's review of revision rev as its last, unless
// a later revision's is recorded already.
func (h *handler) remember(ctx context.Context, runID string, rev uint64, sum string) error {
	for {
		cur, kvRev, ok, err := h.last(ctx, runID)
		if err != nil {
			return err
		}
		if ok && cur.rev > rev {
			return nil
		}
		val := []byte(strconv.FormatUint(rev, 10) + " " + sum)
		if kvRev == 0 {
			_, err = h.votes.Create(ctx, lastKey(runID), val)
		} else {
			_, err = h.votes.Update(ctx, lastKey(runID), val, kvRev)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Another reporter wrote it meanwhile: read it again.
	}
}

// newer reports whether the run has a verdict of a later revision than v.
func (h *handler) newer(ctx context.Context, v *nixbuspb.RunVerdict) (bool, error) {
	reports, err := h.s.js.Stream(ctx, bus.StreamReports)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", bus.StreamReports, err)
	}
	var last nixbuspb.RunVerdict
	found, err := bus.LastVerdict(ctx, reports, v.GetRunId(), &last)
	return found && last.GetRevision() > v.GetRevision(), err
}

// news decides whether the verdict of revision rev > 0 gets a review:
// not when a later revision exists or was reviewed, nor when its summary
// is the run's last review's (then recorded as the last, for the next).
func (h *handler) news(ctx context.Context, v *nixbuspb.RunVerdict, sum string) (bool, string, error) {
	rev := v.GetRevision()
	if newer, err := h.newer(ctx, v); err != nil || newer {
		return false, "a later verdict of the run will be reported", err
	}
	cur, _, ok, err := h.last(ctx, v.GetRunId())
	switch {
	case err != nil:
		return false, "", err
	case ok && cur.rev >= rev:
		return false, "a later verdict of the run was reported", nil
	case ok && cur.summary == sum:
		return false, "the restart changed neither the vote nor the failed jobs", h.remember(ctx, v.GetRunId(), rev, sum)
	}
	return true, "", nil
}
