package app

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

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/changeevent"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// RunResult is what a one-shot run ended with.
type RunResult struct {
	RunID    string
	Verdict  *nixbuspb.RunVerdict
	Review   *nixbuspb.ReviewPosted
	Outcomes []*nixbuspb.JobOutcome
	Uploads  []*nixbuspb.UploadResult
}

func runCommand(ctx context.Context, args []string, stdout, stderr *os.File) (bool, error) {
	fs := newFlagSet("run", stderr)
	var o Options
	var c Configs
	o.RegisterFlags(fs)
	c.RegisterFlags(fs)
	// A one-shot run talks to the user on stdout; services only warn.
	o.LogLevel = "warn"
	fs.Lookup("log.level").DefValue = "warn"
	timeout := fs.Duration("run.timeout", 4*time.Hour, "give up on the run after this long")
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	if fs.NArg() != 1 {
		return false, errors.New("want exactly one flake directory")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := RunFlake(ctx, o, &c, fs.Arg(0), stdout, o.Logger(stderr))
	if err != nil {
		return false, err
	}
	if res.Review != nil {
		// The vote also counts what the verdict does not: uploads.
		return res.Review.GetVerified() > 0, nil
	}
	return res.Verdict.GetStatus() == nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, nil
}

// RunFlake runs every service in this process, publishes a manual change
// event for the flake in dir, follows the run to its review and the upload
// of what it built, and prints progress to out.
func RunFlake(ctx context.Context, o Options, c *Configs, dir string, out io.Writer, logger *slog.Logger) (*RunResult, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("flake dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(abs, "flake.nix")); err != nil {
		return nil, fmt.Errorf("no flake.nix in %s: %w", abs, err)
	}
	svcCtx, stop := context.WithCancel(ctx)
	defer stop()
	inst, err := Start(svcCtx, o, c, io.Discard, logger)
	if err != nil {
		return nil, err
	}
	res, runErr := followManual(ctx, inst, abs, out)
	stop()
	if err := inst.Wait(); err != nil && runErr == nil {
		runErr = err
	}
	return res, runErr
}

func followManual(ctx context.Context, inst *Instance, dir string, out io.Writer) (*RunResult, error) {
	nc, err := inst.Connect("run")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	ev, err := changeevent.Manual(changeevent.Options{LocalPath: dir})
	if err != nil {
		return nil, err
	}
	// The root of the run's trace, from publishing the event to the end.
	tp, err := inst.tracing.provider(ctx, "run")
	if err != nil {
		return nil, err
	}
	ctx, span := bus.Tracer(tp, "nixbus.dev/nixbus/internal/app").Start(ctx, "nixbus run",
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(changeevent.Attrs(ev)...))
	res, err := Follow(ctx, js, ev, out, inst.logger)
	if res != nil && res.Verdict != nil {
		span.SetAttributes(attribute.String("nixbus.run_status", res.Verdict.GetStatus().String()))
	}
	bus.EndSpan(span, err)
	if err != nil {
		return res, err
	}
	// No log server outlives a one-shot run: show the end of each failed
	// build's log here instead.
	logs, err := js.ObjectStore(ctx, bus.LogBucket)
	if err != nil {
		return res, fmt.Errorf("open logs: %w", err)
	}
	for _, o := range res.Outcomes {
		if o.GetLogKey() == "" || o.GetStatus() != nixbuspb.JobStatus_JOB_STATUS_FAILED {
			continue
		}
		data, err := logs.GetBytes(ctx, o.GetLogKey())
		if err != nil {
			fmt.Fprintf(out, "\n(no log for %s: %v)\n", o.GetAttr(), err)
			continue
		}
		fmt.Fprintf(out, "\nlast lines of the log of %s:\n%s", o.GetAttr(), tail(string(data), 15))
	}
	return res, nil
}

func tail(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n")+"\n", "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  | " + strings.Join(lines, "  | ")
}

// Follow publishes ev and follows the run it starts until its review is
// given and everything it built is uploaded, printing progress to out.
func Follow(ctx context.Context, js jetstream.JetStream, ev *nixbuspb.ChangeEvent, out io.Writer, logger *slog.Logger) (*RunResult, error) {
	res := &RunResult{RunID: bus.RunID(ev.GetEventId())}
	fmt.Fprintf(out, "run %s: evaluating %s\n", res.RunID, ev.GetLocalPath())
	// The services may still be coming up: make sure there is a stream to
	// follow and one to publish to.
	if err := bus.EnsureStreams(ctx, js, bus.StreamOptions{}); err != nil {
		return nil, err
	}

	cons, err := js.OrderedConsumer(ctx, bus.StreamReports, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.OutcomeSubject(res.RunID), bus.VerdictSubject(res.RunID), bus.UploadSubject(res.RunID), bus.ReviewSubject(res.RunID)},
	})
	if err != nil {
		return nil, fmt.Errorf("follow run: %w", err)
	}
	pub := bus.NewPublisher(js, logger)
	if err := pub.Publish(ctx, bus.ChangeSubject(ev.GetProject()), bus.MsgIDChange(ev.GetEventId()), ev, nil); err != nil {
		return nil, err
	}
	built := map[string]bool{}
	for !res.complete(len(built)) {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return res, fmt.Errorf("follow run %s: %w", res.RunID, err)
		}
		switch {
		case msg.Subject() == bus.OutcomeSubject(res.RunID):
			var jo nixbuspb.JobOutcome
			if err := bus.Decode(msg.Data(), &jo); err != nil {
				return res, err
			}
			res.Outcomes = append(res.Outcomes, &jo)
			if jo.GetStatus() == nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED {
				built[jo.GetDrvPath()] = true
			}
			fmt.Fprintf(out, "  %-9s %s%s\n", statusWord(jo.GetStatus()), jo.GetAttr(), reasonSuffix(&jo))
		case msg.Subject() == bus.VerdictSubject(res.RunID):
			res.Verdict = &nixbuspb.RunVerdict{}
			if err := bus.Decode(msg.Data(), res.Verdict); err != nil {
				return res, err
			}
		case msg.Subject() == bus.UploadSubject(res.RunID):
			var u nixbuspb.UploadResult
			if err := bus.Decode(msg.Data(), &u); err != nil {
				return res, err
			}
			res.Uploads = append(res.Uploads, &u)
			if !u.GetOk() {
				fmt.Fprintf(out, "  upload of %s failed: %s\n", u.GetDrvPath(), u.GetError())
			}
		case msg.Subject() == bus.ReviewSubject(res.RunID):
			res.Review = &nixbuspb.ReviewPosted{}
			if err := bus.Decode(msg.Data(), res.Review); err != nil {
				return res, err
			}
		}
	}
	fmt.Fprintf(out, "\nverdict: %s (%d jobs)\n", verdictWord(res.Verdict.GetStatus()), res.Verdict.GetJobCount())
	if res.Review != nil {
		fmt.Fprintf(out, "review: Verified %+d\n%s", res.Review.GetVerified(), res.Review.GetMessage())
	}
	return res, nil
}

// complete: the verdict is in, the review given (a cancelled run gets
// none), and every built derivation uploaded.
func (r *RunResult) complete(built int) bool {
	if r.Verdict == nil || len(r.Uploads) < built {
		return false
	}
	return r.Review != nil || r.Verdict.GetStatus() == nixbuspb.RunStatus_RUN_STATUS_CANCELLED
}

func statusWord(s nixbuspb.JobStatus) string {
	switch s {
	case nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED:
		return "built"
	case nixbuspb.JobStatus_JOB_STATUS_FAILED:
		return "FAILED"
	case nixbuspb.JobStatus_JOB_STATUS_SKIPPED:
		return "skipped"
	case nixbuspb.JobStatus_JOB_STATUS_CACHED:
		return "cached"
	case nixbuspb.JobStatus_JOB_STATUS_CANCELLED:
		return "cancelled"
	}
	return "unknown"
}

func verdictWord(s nixbuspb.RunStatus) string {
	switch s {
	case nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED:
		return "SUCCESS"
	case nixbuspb.RunStatus_RUN_STATUS_CANCELLED:
		return "CANCELLED"
	}
	return "FAILURE"
}

func reasonSuffix(jo *nixbuspb.JobOutcome) string {
	if jo.GetReason() == "" {
		return ""
	}
	return ": " + oneLine(jo.GetReason())
}

func oneLine(s string) string {
	for i, r := range s {
		if r == '\n' {
			return s[:i] + " …"
		}
	}
	return s
}
