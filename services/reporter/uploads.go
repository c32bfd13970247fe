package reporter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// uploadReport is what became of the uploads of a run's builds: every
// derivation the run built successfully must be in the binary cache, or
// the review says which is not and why.
type uploadReport struct {
	built  int // derivations built, each with one upload
	failed []failedUpload
}

type failedUpload struct {
	attr, drv, err string
}

// awaitUploads waits until the cache-uploaders have reported the upload of
// every derivation the run built, or until the verdict is UploadWait old
// (measured from its time on the bus, so a redelivered verdict waits no
// longer). A build whose upload failed after the uploader's retries, or
// was not reported in time, is listed as failed.
//
// The verdict counts the jobs that were built; their outcomes (published
// before the verdict) name the derivations, and the upload results (one
// per derivation) follow them on the reports stream.
func (h *handler) awaitUploads(ctx context.Context, v *nixbuspb.RunVerdict, msg jetstream.Msg) (uploadReport, error) {
	var rep uploadReport
	wait := h.s.cfg.UploadWait
	if wait <= 0 || v.GetSucceededCount() == 0 {
		return rep, nil
	}
	deadline := time.Now().Add(wait)
	if md, err := msg.Metadata(); err == nil {
		deadline = md.Timestamp.Add(wait)
	}
	run := v.GetRunId()
	cons, err := h.s.js.OrderedConsumer(ctx, bus.StreamReports, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.OutcomeSubject(run), bus.UploadSubject(run)},
	})
	if err != nil {
		return rep, fmt.Errorf("read uploads of %s: %w", run, err)
	}
	attrs := map[string]string{} // built drv -> its first attribute
	done := map[string]string{}  // drv -> "" when uploaded, else the error
	var builtJobs int64
	missing := 0 // built drvs with no upload reported yet
	complete := func() bool { return builtJobs >= v.GetSucceededCount() && missing == 0 }
	handle := func(m jetstream.Msg) {
		switch m.Subject() {
		case bus.OutcomeSubject(run):
			var o nixbuspb.JobOutcome
			if bus.Decode(m.Data(), &o) != nil || o.GetStatus() != nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED {
				return
			}
			builtJobs++
			if _, ok := attrs[o.GetDrvPath()]; !ok {
				attrs[o.GetDrvPath()] = o.GetAttr()
				if _, up := done[o.GetDrvPath()]; !up {
					missing++
				}
			}
		case bus.UploadSubject(run):
			var u nixbuspb.UploadResult
			if bus.Decode(m.Data(), &u) != nil {
				return
			}
			reason := u.GetError()
			if !u.GetOk() && reason == "" {
				reason = "upload failed"
			}
			prev, seen := done[u.GetDrvPath()]
			if _, built := attrs[u.GetDrvPath()]; built && !seen {
				missing--
			}
			if !seen || prev != "" {
				done[u.GetDrvPath()] = reason
			}
		}
	}
	// Read what is stored in batches whatever the time (the outcomes are
	// stored before the verdict, so a late reporter must still see them
	// all); once caught up, wait for what comes until the deadline.
	caughtUp := false
	for !complete() {
		if !caughtUp {
			batch, err := cons.FetchNoWait(256)
			if err != nil {
				return rep, h.readErr(ctx, run, err)
			}
			n := 0
			for m := range batch.Messages() {
				handle(m)
				n++
			}
			if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
				return rep, h.readErr(ctx, run, err)
			}
			caughtUp = n == 0
			continue
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		nctx, cancel := context.WithTimeout(ctx, min(left, 5*time.Second))
		m, err := cons.Next(jetstream.FetchContext(nctx))
		cancel()
		switch {
		case err == nil:
			handle(m)
			caughtUp = false
		case errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
		default:
			return rep, h.readErr(ctx, run, err)
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	rep.built = len(attrs)
	for _, drv := range slices.Sorted(maps.Keys(attrs)) {
		reason, ok := done[drv]
		switch {
		case !ok:
			reason = fmt.Sprintf("no upload reported within %s of the verdict", wait)
		case reason == "":
			continue
		}
		rep.failed = append(rep.failed, failedUpload{attr: attrs[drv], drv: drv, err: reason})
	}
	return rep, nil
}

func (h *handler) readErr(ctx context.Context, run string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("read uploads of %s: %w", run, err)
}

// review is the vote and message a verdict earns with its uploads: failed
// uploads are listed, and fail the run when the operator says so.
func review(v *nixbuspb.RunVerdict, up uploadReport, cfg Config) (int, string) {
	vote, msg := Vote(v), Message(v, cfg.LogBaseURL, cfg.FailedListLimit)
	if len(up.failed) == 0 {
		return vote, msg
	}
	if cfg.FailOnUploadError && vote > 0 {
		vote = -1
		msg = strings.Replace(msg, "The result is: SUCCESS", "The result is: FAILURE", 1)
	}
	var b strings.Builder
	b.WriteString(msg)
	fmt.Fprintf(&b, "\nUploads to the binary cache failed (%d of %d built):\n", len(up.failed), up.built)
	for i, f := range up.failed {
		if i == cfg.FailedListLimit {
			fmt.Fprintf(&b, " … and %d more\n", len(up.failed)-i)
			break
		}
		fmt.Fprintf(&b, " - %s: %s\n", shownAttr(f.attr), oneLine(f.err))
	}
	return vote, b.String()
}
