package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func statusCommand(ctx context.Context, args []string, stdout, stderr *os.File) error {
	fs, o := opsFlags("status", stderr)
	limit := fs.Int("limit", 20, "how many recent runs to list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("want at most one run id, got %q", fs.Args())
	}
	js, done, err := opsJetStream(*o, "status", stderr)
	if err != nil {
		return err
	}
	defer done()
	if fs.NArg() == 1 {
		return runStatus(ctx, js, fs.Arg(0), stdout)
	}
	return recentRuns(ctx, js, *limit, stdout)
}

// recentRuns lists the newest runs first, each with its status and counts.
func recentRuns(ctx context.Context, js jetstream.JetStream, limit int, w io.Writer) error {
	var starts []*nixbuspb.RunStarted
	_, err := bus.ReadOrdered(ctx, js, bus.StreamRuns, []string{bus.RunStarts}, 0, func(m jetstream.Msg) error {
		var s nixbuspb.RunStarted
		if bus.Decode(m.Data(), &s) != nil {
			return nil // not ours to judge here; skip it
		}
		starts = append(starts, &s)
		if len(starts) > limit {
			starts = starts[1:]
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(starts) == 0 {
		fmt.Fprintln(w, "no runs")
		return nil
	}
	reports, err := js.Stream(ctx, bus.StreamReports)
	if err != nil {
		return fmt.Errorf("open %s: %w", bus.StreamReports, err)
	}
	for i := len(starts) - 1; i >= 0; i-- {
		s := starts[i]
		ch := s.GetChange()
		what := ch.GetRef()
		if ch.GetLocalPath() != "" {
			what = ch.GetLocalPath()
		}
		when := time.UnixMilli(s.GetStartedUnixMs()).UTC().Format(time.DateTime)
		raw, err := reports.GetLastMsgForSubject(ctx, bus.VerdictSubject(s.GetRunId()))
		if bus.IsNotFound(err) {
			fmt.Fprintf(w, "%s  %s  %-9s %s %s\n", printable(s.GetRunId()), when, "running", printable(ch.GetProject()), printable(what))
			continue
		}
		if err != nil {
			return fmt.Errorf("verdict of %s: %w", s.GetRunId(), err)
		}
		var v nixbuspb.RunVerdict
		if err := bus.Decode(raw.Data, &v); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s  %s  %-9s %s %s  %d jobs: %d built, %d cached, %d failed, %d skipped\n",
			printable(s.GetRunId()), when, verdictWord(v.GetStatus()), printable(ch.GetProject()), printable(what),
			v.GetJobCount(), v.GetSucceededCount(), v.GetCachedCount(), v.GetFailedCount(), v.GetSkippedCount())
	}
	return nil
}

// runStatus prints one run's counts per system and its failed jobs.
func runStatus(ctx context.Context, js jetstream.JetStream, runID string, w io.Writer) error {
	p, err := readRun(ctx, js, runID)
	if err != nil {
		return err
	}
	if len(p.jobs) == 0 && len(p.done) == 0 && p.verdict == nil && !p.evalEnd {
		return fmt.Errorf("%w %q (or it is still evaluating)", errNoSuchRun, printable(runID))
	}
	status := "running"
	if p.verdict != nil {
		status = verdictWord(p.verdict.GetStatus())
	}
	fmt.Fprintf(w, "run %s: %s\n", runID, status)
	for _, l := range p.progressLines() {
		fmt.Fprintln(w, l)
	}
	if p.evalErr != "" {
		fmt.Fprintf(w, "evaluation failed: %s\n", printable(oneLine(p.evalErr)))
	}
	failed := p.failedOutcomes()
	if len(failed) > 0 {
		fmt.Fprintln(w, "failed jobs:")
	}
	for _, o := range failed {
		fmt.Fprintf(w, "  %-9s %s%s\n", statusWord(o.GetStatus()), printable(o.GetAttr()), printable(reasonSuffix(o)))
	}
	return nil
}
