package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"unicode"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Exit codes of the commands that follow a run, as `nixbus run`'s.
const (
	exitSucceeded = 0
	exitFailed    = 1
	exitCouldNot  = 2
)

// opsJetStream connects an operator command to the running nixbus given by
// the --nats.* flags, as the admin role.
func opsJetStream(o Options, name string, stderr *os.File) (jetstream.JetStream, func(), error) {
	if o.NATSURL == "" {
		return nil, nil, fmt.Errorf("--nats.url is required: %s reads from a running nixbus", name)
	}
	if err := o.NATSAuth.validate(o.NATSURL); err != nil {
		return nil, nil, err
	}
	auth, err := o.NATSAuth.options()
	if err != nil {
		return nil, nil, err
	}
	logger := o.Logger(stderr)
	inst := &Instance{url: o.NATSURL, auth: auth, logger: logger, role: bus.RoleAdmin, tracing: newTracing("", logger)}
	nc, err := inst.connect(name)
	if err != nil {
		inst.close()
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		inst.close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, inst.close, nil
}

// runProgress is what the bus says of one run so far.
type runProgress struct {
	runID   string
	jobs    map[string]*nixbuspb.Job        // by attr
	done    map[string]*nixbuspb.JobOutcome // by attr
	logging map[string]bool                 // drv bases that streamed a log chunk
	evalErr string
	evalEnd bool
	verdict *nixbuspb.RunVerdict
}

func newRunProgress(runID string) *runProgress {
	return &runProgress{runID: runID, jobs: map[string]*nixbuspb.Job{}, done: map[string]*nixbuspb.JobOutcome{}, logging: map[string]bool{}}
}

// apply takes in one message of the run; it reports whether it changed
// anything shown.
func (p *runProgress) apply(subject string, data []byte) (bool, error) {
	switch {
	case subject == bus.RunSubject(p.runID, bus.RunJobKind):
		var j nixbuspb.Job
		if err := bus.Decode(data, &j); err != nil {
			return false, err
		}
		p.jobs[j.GetAttr()] = &j
	case subject == bus.RunSubject(p.runID, bus.RunEvalKind):
		var e nixbuspb.EvalDone
		if err := bus.Decode(data, &e); err != nil {
			return false, err
		}
		p.evalEnd, p.evalErr = true, e.GetError()
	case subject == bus.OutcomeSubject(p.runID):
		var o nixbuspb.JobOutcome
		if err := bus.Decode(data, &o); err != nil {
			return false, err
		}
		p.done[o.GetAttr()] = &o
	case subject == bus.VerdictSubject(p.runID):
		p.verdict = &nixbuspb.RunVerdict{}
		if err := bus.Decode(data, p.verdict); err != nil {
			return false, err
		}
	case strings.HasPrefix(subject, strings.TrimSuffix(bus.LogRunSubjects(p.runID), "*")):
		base := subject[strings.LastIndexByte(subject, '.')+1:]
		if p.logging[base] {
			return false, nil
		}
		p.logging[base] = true
	default:
		return false, nil
	}
	return true, nil
}

// systemCounts: a job is queued until a builder streams its log, building
// until its outcome; done if built or cached, failed otherwise.
type systemCounts struct{ queued, building, done, failed int }

func (p *runProgress) counts() map[string]*systemCounts {
	out := map[string]*systemCounts{}
	get := func(system string) *systemCounts {
		if system == "" {
			system = "(none)"
		}
		if out[system] == nil {
			out[system] = &systemCounts{}
		}
		return out[system]
	}
	for attr, j := range p.jobs {
		c := get(j.GetSystem())
		o, ok := p.done[attr]
		switch {
		case ok && (o.GetStatus() == nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED || o.GetStatus() == nixbuspb.JobStatus_JOB_STATUS_CACHED):
			c.done++
		case ok:
			c.failed++
		case p.logging[bus.Token(bus.DrvBase(j.GetDrvPath()))]:
			c.building++
		default:
			c.queued++
		}
	}
	for attr, o := range p.done {
		if p.jobs[attr] == nil { // an outcome without its job message (eval errors)
			c := get(o.GetSystem())
			if o.GetStatus() == nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED || o.GetStatus() == nixbuspb.JobStatus_JOB_STATUS_CACHED {
				c.done++
			} else {
				c.failed++
			}
		}
	}
	return out
}

// progressLines is one line per system, sorted.
func (p *runProgress) progressLines() []string {
	counts := p.counts()
	systems := make([]string, 0, len(counts))
	for s := range counts {
		systems = append(systems, s)
	}
	sort.Strings(systems)
	var lines []string
	for _, s := range systems {
		c := counts[s]
		total := c.queued + c.building + c.done + c.failed
		lines = append(lines, fmt.Sprintf("%s %s %d queued, %d building, %d done, %d failed",
			printable(s), bar(c.done+c.failed, total, 20), c.queued, c.building, c.done, c.failed))
	}
	if len(lines) == 0 {
		if p.evalEnd {
			lines = append(lines, "evaluated: no jobs")
		} else {
			lines = append(lines, "evaluating")
		}
	}
	return lines
}

func bar(n, total, width int) string {
	fill := 0
	if total > 0 {
		fill = n * width / total
	}
	return "[" + strings.Repeat("#", fill) + strings.Repeat(".", width-fill) + "]"
}

// failedOutcomes are the outcomes that are neither built nor cached, by attr.
func (p *runProgress) failedOutcomes() []*nixbuspb.JobOutcome {
	var out []*nixbuspb.JobOutcome
	for _, o := range p.done {
		if o.GetStatus() != nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED && o.GetStatus() != nixbuspb.JobStatus_JOB_STATUS_CACHED {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b *nixbuspb.JobOutcome) int { return strings.Compare(a.GetAttr(), b.GetAttr()) })
	return out
}

// printable makes text from the bus safe for a terminal: valid UTF-8, no
// control characters.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// runFilters are the subjects a run's progress is read from.
func runFilters(runID string) map[string][]string {
	return map[string][]string{
		bus.StreamRuns:    {bus.RunSubject(runID, bus.RunJobKind), bus.RunSubject(runID, bus.RunEvalKind)},
		bus.StreamReports: {bus.OutcomeSubject(runID), bus.VerdictSubject(runID)},
		bus.StreamLogs:    {bus.LogRunSubjects(runID)},
	}
}

// watchRun follows run until its verdict, printing progress to out: lines
// rewritten in place on a terminal, else a new block whenever it changes.
func watchRun(ctx context.Context, js jetstream.JetStream, runID string, out io.Writer, tty bool) (*nixbuspb.RunVerdict, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type msg struct {
		subject string
		data    []byte
	}
	msgs := make(chan msg, 64)
	for stream, filters := range runFilters(runID) {
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
		if err != nil {
			return nil, fmt.Errorf("watch %s: %w", runID, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case msgs <- msg{m.Subject(), m.Data()}:
			case <-ctx.Done():
			}
		})
		if err != nil {
			return nil, fmt.Errorf("watch %s: %w", runID, err)
		}
		defer cc.Stop()
	}
	p := newRunProgress(runID)
	shown, last := 0, ""
	show := func() {
		lines := p.progressLines()
		text := strings.Join(lines, "\n")
		if text == last {
			return
		}
		last = text
		if tty && shown > 0 {
			fmt.Fprintf(out, "\x1b[%dA", shown) // back to the first line
		}
		for _, l := range lines {
			if tty {
				fmt.Fprint(out, "\r\x1b[K")
			}
			fmt.Fprintln(out, l)
		}
		shown = len(lines)
	}
	// A run whose failed job was restarted has several verdicts: the
	// newest stored one (and the outcomes before it) is the run's.
	want := newestRevision(ctx, js, runID)
	for p.verdict == nil || p.verdict.GetRevision() < want {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("watch %s: %w", runID, ctx.Err())
		case m := <-msgs:
			changed, err := p.apply(m.subject, m.data)
			if err != nil {
				return nil, err
			}
			// Show once the backlog read so far is in, not per message.
			if changed && len(msgs) == 0 {
				show()
			}
		}
	}
	show()
	for _, o := range p.failedOutcomes() {
		fmt.Fprintf(out, "  %-9s %s%s\n", statusWord(o.GetStatus()), printable(o.GetAttr()), printable(reasonSuffix(o)))
	}
	if p.verdict.GetEvalError() != "" {
		fmt.Fprintf(out, "evaluation failed: %s\n", printable(oneLine(p.verdict.GetEvalError())))
	}
	fmt.Fprintf(out, "verdict: %s (%d jobs)\n", verdictWord(p.verdict.GetStatus()), p.verdict.GetJobCount())
	return p.verdict, nil
}

// newestRevision is the revision of run's newest stored verdict; 0 when
// it has none or it cannot be read.
func newestRevision(ctx context.Context, js jetstream.JetStream, runID string) uint64 {
	reports, err := js.Stream(ctx, bus.StreamReports)
	if err != nil {
		return 0
	}
	var v nixbuspb.RunVerdict
	if found, _ := bus.LastVerdict(ctx, reports, runID, &v); !found {
		return 0
	}
	return v.GetRevision()
}

func verdictExit(v *nixbuspb.RunVerdict) int {
	if v.GetStatus() == nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED {
		return exitSucceeded
	}
	return exitFailed
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// opsFlags is the flag set of an operator command: the shared flags (only
// --nats.* and --log.* matter).
func opsFlags(name string, stderr io.Writer) (*flag.FlagSet, *Options) {
	fs := newFlagSet(name, stderr)
	var o Options
	o.RegisterFlags(fs)
	o.LogLevel = "warn"
	fs.Lookup("log.level").DefValue = "warn"
	return fs, &o
}

func watchCommand(ctx context.Context, args []string, stdout, stderr *os.File) int {
	fs, o := opsFlags("watch", stderr)
	if err := fs.Parse(args); err != nil {
		return exitCouldNot
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "nixbus watch: want exactly one run id")
		return exitCouldNot
	}
	js, done, err := opsJetStream(*o, "watch", stderr)
	if err != nil {
		fmt.Fprintf(stderr, "nixbus watch: %v\n", err)
		return exitCouldNot
	}
	defer done()
	// A run the bus has never heard of would be waited for forever.
	if known, err := runKnown(ctx, js, fs.Arg(0)); err != nil || !known {
		if err == nil {
			err = fmt.Errorf("%w %s", errUnknownRun, printable(fs.Arg(0)))
		}
		fmt.Fprintf(stderr, "nixbus watch: %v\n", err)
		return exitCouldNot
	}
	fmt.Fprintf(stdout, "run %s\n", printable(fs.Arg(0)))
	v, err := watchRun(ctx, js, fs.Arg(0), stdout, isTerminal(stdout))
	if err != nil {
		fmt.Fprintf(stderr, "nixbus watch: %v\n", err)
		return exitCouldNot
	}
	return verdictExit(v)
}

// readRun reads what the bus holds of run now.
func readRun(ctx context.Context, js jetstream.JetStream, runID string) (*runProgress, error) {
	p := newRunProgress(runID)
	for stream, filters := range runFilters(runID) {
		_, err := bus.ReadOrdered(ctx, js, stream, filters, 0, func(m jetstream.Msg) error {
			_, err := p.apply(m.Subject(), m.Data())
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

var (
	errNoSuchRun  = errors.New("no such run")
	errUnknownRun = errors.New("unknown run")
)

// runKnown reports whether the bus holds anything of run now: its change
// event still waiting for the evaluator, a message on the runs stream
// (started, jobs, results, ...), or its verdict. It reads what is stored
// and does not wait. The change events are read first: the evaluator
// stores RunStarted before it takes an event off the queue, so a run is
// never between the two places unseen.
func runKnown(ctx context.Context, js jetstream.JetStream, runID string) (bool, error) {
	if !bus.ValidRunID(runID) {
		return false, nil
	}
	if ok, err := pendingChange(ctx, js, runID); err != nil || ok {
		return ok, err
	}
	for _, q := range []struct{ stream, subject string }{
		{bus.StreamRuns, bus.RunSubject(runID, ">")},
		{bus.StreamReports, bus.VerdictSubject(runID)},
	} {
		st, err := js.Stream(ctx, q.stream)
		if err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			return false, fmt.Errorf("look up run %s: %w", runID, err)
		}
		_, err = st.GetLastMsgForSubject(ctx, q.subject)
		switch {
		case err == nil:
			return true, nil
		case !bus.IsNotFound(err):
			return false, fmt.Errorf("look up run %s: %w", runID, err)
		}
	}
	return false, nil
}

// pendingChange reports whether the change event of run waits on the
// changes stream (a work queue: it holds only events not yet evaluated).
// The run id is a hash of the event id, which is in the message id.
func pendingChange(ctx context.Context, js jetstream.JetStream, runID string) (bool, error) {
	st, err := js.Stream(ctx, bus.StreamChanges)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up run %s: %w", runID, err)
	}
	// Each read skips to the next stored event, past those taken.
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(bus.ChangeAll))
		if bus.IsNotFound(err) {
			return false, nil // read to the end
		}
		if err != nil {
			return false, fmt.Errorf("look up run %s: %w", runID, err)
		}
		if id, ok := strings.CutPrefix(m.Header.Get(jetstream.MsgIDHeader), bus.MsgIDChange("")); ok && bus.RunID(id) == runID {
			return true, nil
		}
		seq = m.Sequence + 1
	}
}
