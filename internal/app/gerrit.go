package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/changeevent"
	"nixbus.dev/nixbus/pkg/gerrit"
	"nixbus.dev/nixbus/services/evaluator"
	"nixbus.dev/nixbus/services/reporter"
)

// GerritConfig is how every service that talks to Gerrit reaches it:
// gerrit-ingest streams events, the evaluator fetches, the reporter votes.
type GerritConfig struct {
	SSH  gerrit.SSHConfig
	HTTP gerrit.HTTPConfig
	// ReviewVia picks how votes are posted: "ssh", "rest", or "" for SSH
	// when an SSH address is set, else REST when a URL is set.
	ReviewVia string
}

// RegisterFlags registers --gerrit.ssh.*, --gerrit.http.* and --gerrit.review-via.
func (g *GerritConfig) RegisterFlags(fs *flag.FlagSet) {
	g.SSH.RegisterFlags(fs, "gerrit.ssh.")
	g.HTTP.RegisterFlags(fs, "gerrit.http.")
	fs.StringVar(&g.ReviewVia, "gerrit.review-via", "", `how votes are posted: "ssh" or "rest" (default: ssh if configured, else rest)`)
}

// Validate checks the Gerrit settings.
func (g *GerritConfig) Validate() error {
	switch g.ReviewVia {
	case "", "ssh", "rest":
	default:
		return fmt.Errorf("--gerrit.review-via %q: want ssh or rest", g.ReviewVia)
	}
	if g.ReviewVia == "ssh" && !g.SSH.Enabled() {
		return errors.New("--gerrit.review-via=ssh needs --gerrit.ssh.address")
	}
	if g.ReviewVia == "rest" && !g.HTTP.Enabled() {
		return errors.New("--gerrit.review-via=rest needs --gerrit.http.url")
	}
	return errors.Join(g.SSH.Validate(), g.HTTP.Validate())
}

func (g *GerritConfig) ssh() gerrit.SSHConfig { return g.SSH }

// reviewer builds the configured Gerrit reviewer, or nil when votes are
// printed instead.
func (g *GerritConfig) reviewer() (gerrit.Reviewer, error) {
	via := g.ReviewVia
	if via == "" && g.SSH.Enabled() {
		via = "ssh"
	} else if via == "" && g.HTTP.Enabled() {
		via = "rest"
	}
	switch via {
	case "ssh":
		return gerrit.NewSSHReviewer(g.SSH, gerrit.DefaultRetry())
	case "rest":
		return gerrit.NewRESTReviewer(g.HTTP, &http.Client{Timeout: g.HTTP.Timeout}, gerrit.DefaultRetry())
	}
	return nil, nil
}

// poster adapts a Gerrit reviewer to what the reporter consumes.
func (g *GerritConfig) poster() (reporter.Poster, error) {
	r, err := g.reviewer()
	if err != nil || r == nil {
		return nil, err
	}
	return reviewPoster{r}, nil
}

type reviewPoster struct{ r gerrit.Reviewer }

func (p reviewPoster) Post(ctx context.Context, post reporter.Post) error {
	ch := post.Change
	return p.r.Review(ctx, gerrit.Review{
		Project: ch.GetProject(), Change: ch.GetChange(), Patchset: ch.GetPatchset(), Revision: ch.GetRevision(),
		Message: post.Message, Tag: post.Tag, Verified: post.Verified, NoVote: post.NoVote,
		Marker: post.Marker, MaybePosted: post.MaybePosted,
	})
}

// fetcher is the evaluator's way to get a change's source, or nil (a true
// nil interface) when no Gerrit is configured.
func (g *GerritConfig) fetcher() (evaluator.Fetcher, error) {
	return evaluator.NewGitFetcher(g.SSH, g.HTTP)
}

// triggerCommand publishes a change event and returns the exit code: 0,
// or with --watch the run's as `nixbus watch` gives it.
func triggerCommand(ctx context.Context, args []string, stdout, stderr *os.File) (int, error) {
	fs := newFlagSet("trigger", stderr)
	var o Options
	var g GerritConfig
	var t changeevent.Options
	o.RegisterFlags(fs)
	g.RegisterFlags(fs)
	fs.StringVar(&t.Project, "project", "", "Gerrit project")
	fs.Int64Var(&t.Change, "change", 0, "change number")
	var ps int
	fs.IntVar(&ps, "patchset", 0, "patchset number")
	fs.StringVar(&t.Ref, "ref", "", "ref to evaluate instead of a patchset (refs/heads/<branch> or refs/changes/…)")
	fs.StringVar(&t.Branch, "branch", "", "branch to evaluate instead of a patchset")
	fs.StringVar(&t.LocalPath, "local-path", "", "evaluate this local checkout instead of fetching")
	fs.StringVar(&t.RepoURL, "repo-url", "", "where to fetch from (default: the Gerrit SSH URL of the project)")
	watch := fs.Bool("watch", false, "follow the run to its verdict (exit 0 success, 1 failed, 2 could not follow)")
	if err := fs.Parse(args); err != nil {
		return 0, err
	}
	t.Patchset = int32(ps)
	if o.NATSURL == "" {
		return 0, errors.New("--nats.url is required: trigger publishes to a running nixbus")
	}
	if t.RepoURL == "" && t.LocalPath == "" && g.SSH.Enabled() {
		t.RepoURL = g.SSH.RepoURL(t.Project)
	}
	traces, err := o.tracesURL()
	if err != nil {
		return 0, err
	}
	ev, err := changeevent.Manual(t)
	if err != nil {
		return 0, err
	}
	if err := o.NATSAuth.validate(o.NATSURL); err != nil {
		return 0, err
	}
	auth, err := o.NATSAuth.options()
	if err != nil {
		return 0, err
	}
	logger := o.Logger(stderr)
	inst := &Instance{url: o.NATSURL, auth: auth, logger: logger, role: bus.RoleAdmin, tracing: newTracing(traces, logger)}
	defer inst.close()
	tp, err := inst.tracing.provider(ctx, "trigger")
	if err != nil {
		return 0, err
	}
	// The root of the run's trace, as gerrit-ingest makes for Gerrit's events.
	ctx, span := bus.Tracer(tp, "nixbus.dev/nixbus/internal/app").Start(ctx, "change event",
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(changeevent.Attrs(ev)...))
	defer span.End()
	nc, err := inst.connect("trigger")
	if err != nil {
		return 0, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, fmt.Errorf("jetstream: %w", err)
	}
	if err := changeevent.Publish(ctx, js, ev); err != nil {
		bus.Fail(span, err)
		return 0, err
	}
	runID := bus.RunID(ev.GetEventId())
	what := ev.GetRef()
	if what == "" {
		what = ev.GetLocalPath()
	}
	fmt.Fprintf(stdout, "triggered %s (event %s)\nrun %s\n", what, ev.GetEventId(), runID)
	span.End()
	if !*watch {
		return 0, nil
	}
	v, err := watchRun(ctx, js, runID, stdout, isTerminal(stdout))
	if err != nil {
		return exitCouldNot, err
	}
	return verdictExit(v), nil
}
