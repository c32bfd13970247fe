package e2e

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	cacheuploader "nixbus.dev/nixbus/services/cache-uploader"
	"nixbus.dev/nixbus/services/reporter"
)

// otlpReceiver takes spans the way a collector or Jaeger does: OTLP over
// HTTP, POST /v1/traces with a protobuf ExportTraceServiceRequest.
type otlpReceiver struct {
	URL   string
	mu    sync.Mutex
	spans []span
}

// span is a received span with the service.name of its resource.
type span struct {
	service string
	*tracepb.Span
}

func (s span) id() string     { return hex.EncodeToString(s.SpanId) }
func (s span) parent() string { return hex.EncodeToString(s.ParentSpanId) }
func (s span) String() string { return s.service + "/" + s.Name + "@" + s.id() }

func (s span) attr(key string) *commonpb.AnyValue {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return nil
}

func startReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		if err := r.receive(req); err != nil {
			t.Errorf("otlp receiver: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body, err := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(body)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *otlpReceiver) receive(req *http.Request) error {
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		return fmt.Errorf("content type %q", ct)
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &export); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range export.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, span{service, s})
			}
		}
	}
	return nil
}

func (r *otlpReceiver) Spans() []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]span(nil), r.spans...)
}

// One Gerrit patchset is one trace: gerrit-ingest's root span, the
// evaluation, every build, every upload and the review, each span the
// child of one that is in the trace, exported over real OTLP/HTTP.
func TestTraceFromGerritEventToVote(t *testing.T) {
	recv := startReceiver(t)
	g := gerrittest.Start(t, gerrittest.Options{})
	repo := g.CreateProject(t, "demo")
	ps := repo.UploadPatchset(t, 101, 1, saltedExample(t))
	srv := natstest.Start(t)
	_, js := srv.Connect(t)

	ssh := g.SSHConfig()
	o := testOptions(t, srv.URL, t.TempDir())
	o.OTelEndpoint = recv.URL
	c := testConfigs(t)
	fs := newFlagSet()
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{
		"--reporter.log-base-url", "http://ci.example/logs", "--reporter.retry-delay", "100ms",
		"--gerrit.ssh.address", ssh.Address, "--gerrit.ssh.user", ssh.User,
		"--gerrit.ssh.key-file", ssh.KeyFile, "--gerrit.ssh.known-hosts-file", ssh.KnownHostsFile,
		"--gerrit-ingest.reconnect-min", "50ms", "--gerrit-ingest.reconnect-max", "500ms",
	}))
	ctx, cancel := context.WithCancel(t.Context())
	inst, err := app.Start(ctx, o, c, io.Discard, logger(t))
	require.NoError(t, err)
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			cancel()
			require.NoError(t, inst.Wait())
		})
	}
	t.Cleanup(stop)

	g.Push(ps)
	reviews := g.WaitReviews(t, 1)
	require.Equal(t, "-1", reviews[0].Labels["Verified"], reviews[0].Raw)
	waitConsumerIdle(t, js, bus.StreamReports, reporter.Consumer)
	waitConsumerIdle(t, js, bus.StreamRuns, cacheuploader.Consumer(nil))
	// Stopping flushes every span the services made.
	stop()

	tr := oneTrace(t, recv.Spans())
	root := tr.root
	require.Equal(t, "nixbus-gerrit-ingest", root.service)
	require.Equal(t, "change event", root.Name)
	require.EqualValues(t, 101, root.attr("gerrit.change").GetIntValue())
	require.Equal(t, "patchset-created", root.attr("gerrit.event.type").GetStringValue())
	byID, named, ancestor := tr.byID, tr.named, tr.ancestor

	evals := named("nixbus-evaluator", "evaluate")
	require.Len(t, evals, 1)
	evaluate := evals[0]
	require.Equal(t, root.id(), evaluate.parent())
	require.Equal(t, tracepb.Span_SPAN_KIND_CONSUMER, evaluate.Kind)
	for _, step := range []string{"fetch", "eval", "publish graph"} {
		s := named("nixbus-evaluator", step)
		require.Len(t, s, 1, step)
		require.Equal(t, evaluate.id(), s[0].parent(), step)
	}

	// The plan, under the evaluation that published the run's jobs.
	plans := named("nixbus-planner", "plan")
	require.Len(t, plans, 1)
	require.True(t, ancestor(plans[0], "nixbus-evaluator", "evaluate"))
	require.EqualValues(t, 8, plans[0].attr("nixbus.jobs").GetIntValue())

	// The plan stands for building the DAG and parents nothing: builds
	// and the vote link to it instead of nesting under a span that ended
	// before they began.
	plan := plans[0]
	for _, s := range tr.spans {
		require.NotEqual(t, plan.id(), s.parent(), "%s nests under the plan", s)
	}

	// One span per build, named after its attribute: five successes and
	// the broken one, in the run's context (the evaluation's), each with
	// its attributes as a string array, its log's URL, a link to the plan,
	// and a link to the build whose result released it.
	builds := map[string]span{}
	for _, s := range tr.spans {
		if s.service == "nixbus-builder" {
			attr, ok := strings.CutPrefix(s.Name, "build ")
			require.True(t, ok, "%s", s)
			builds[attr] = s
		}
	}
	require.Len(t, builds, 6, "%v", builds)
	failed := 0
	for attr, b := range builds {
		require.Equal(t, evaluate.id(), b.parent(), "%s is not in the run's context", b)
		attrs := b.attr("nixbus.attrs").GetArrayValue().GetValues()
		require.Len(t, attrs, 1, "%s: nixbus.attrs is not a string array", b)
		require.Equal(t, attr, attrs[0].GetStringValue())
		drv := b.attr("nixbus.drv_path").GetStringValue()
		require.NotEmpty(t, drv)
		require.NotEmpty(t, b.attr("nixbus.system").GetStringValue())
		run := b.attr("nixbus.run_id").GetStringValue()
		require.Equal(t, "http://ci.example/logs/"+run+"/"+drv[strings.LastIndexByte(drv, '/')+1:],
			b.attr("nixbus.log_url").GetStringValue(), "%s", b)
		status := b.attr("nixbus.build.status").GetStringValue()
		require.Contains(t, []string{"succeeded", "failed"}, status)
		if status == "failed" {
			failed++
			require.Equal(t, tracepb.Status_STATUS_CODE_ERROR, b.Status.GetCode())
		}
		require.Equal(t, [][]byte{plan.SpanId}, linkSpans(b, "plan"), "%s", b)
	}
	require.Equal(t, 1, failed)
	for attr, waited := range map[string]string{"chain2": "chain1", "chain3": "chain2", "nested.wrapped": "chain1"} {
		links := linkSpans(builds[attr], "waited for")
		require.Len(t, links, 1, "build %s", attr)
		require.Equal(t, builds[waited].SpanId, links[0], "build %s waited for %s", attr, waited)
	}
	for _, attr := range []string{"chain1", "broken", "nested.hello"} {
		require.Empty(t, linkSpans(builds[attr], "waited for"), "build %s waited for nothing", attr)
	}

	// Each upload is the child of the build whose result it consumed.
	uploaded := 0
	for _, u := range named("nixbus-cache-uploader", "upload") {
		p := byID[u.parent()]
		require.Equal(t, "nixbus-builder", p.service, "%s", u)
		require.Equal(t, p.attr("nixbus.drv_path").GetStringValue(), u.attr("nixbus.drv_path").GetStringValue())
		if u.attr("nixbus.upload.skipped") == nil {
			uploaded++
		}
	}
	require.Equal(t, 5, uploaded)
	// At most one nix copy per upload (builds that finish together share
	// a batch, and so a copy), signing as it writes to the file:// cache:
	// no separate sign step.
	copies := named("nixbus-cache-uploader", "copy")
	for _, s := range copies {
		require.Equal(t, "upload", byID[s.parent()].Name)
	}
	require.NotEmpty(t, copies)
	require.LessOrEqual(t, len(copies), uploaded)
	require.Empty(t, named("nixbus-cache-uploader", "sign"))

	// The vote: the reporter's span, in the run's context, posting to Gerrit.
	reports := named("nixbus-reporter", "report")
	require.Len(t, reports, 1)
	require.Equal(t, evaluate.id(), reports[0].parent())
	require.EqualValues(t, -1, reports[0].attr("gerrit.verified").GetIntValue())
	posts := named("nixbus-reporter", "post review")
	require.Len(t, posts, 1)
	require.Equal(t, reports[0].id(), posts[0].parent())
	require.Equal(t, "gerrit", posts[0].attr("nixbus.review_via").GetStringValue())
}

// `nixbus run` makes the root span itself: its manual event starts the
// same trace down to the printed review.
func TestTraceOfManualRun(t *testing.T) {
	recv := startReceiver(t)
	srv := natstest.Start(t)
	o := testOptions(t, srv.URL, t.TempDir())
	o.OTelEndpoint = recv.URL
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var out strings.Builder
	res, err := app.RunFlake(ctx, o, testConfigs(t), saltedExample(t), &out, logger(t))
	require.NoError(t, err, out.String())
	require.NotNil(t, res.Review)

	// RunFlake returns once every service stopped and flushed its spans.
	tr := oneTrace(t, recv.Spans())
	require.Equal(t, "nixbus-run", tr.root.service)
	require.Equal(t, "nixbus run", tr.root.Name)
	require.Equal(t, res.RunID, tr.root.attr("nixbus.run_id").GetStringValue())
	evals := tr.named("nixbus-evaluator", "evaluate")
	require.Len(t, evals, 1)
	require.Equal(t, tr.root.id(), evals[0].parent())
	require.Empty(t, tr.named("nixbus-evaluator", "fetch"), "a local flake is not fetched")
	require.Len(t, tr.named("nixbus-builder", "build chain1"), 1)
	require.Len(t, tr.named("nixbus-reporter", "post review"), 1)
	require.Equal(t, "stdout", tr.named("nixbus-reporter", "post review")[0].attr("nixbus.review_via").GetStringValue())
}

// linkSpans are the span ids of s's links of kind (nixbus.link).
func linkSpans(s span, kind string) [][]byte {
	var out [][]byte
	for _, l := range s.Links {
		for _, a := range l.Attributes {
			if a.Key == "nixbus.link" && a.GetValue().GetStringValue() == kind {
				out = append(out, l.SpanId)
			}
		}
	}
	return out
}

// runTrace is the spans of one run, checked to be one trace.
type runTrace struct {
	spans []span
	root  span
	byID  map[string]span
}

// oneTrace checks that spans are one trace: one root, every span in its
// trace, and every other span's parent among them.
func oneTrace(t *testing.T, spans []span) *runTrace {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("received spans:\n%s", tree(spans))
		}
	})
	require.NotEmpty(t, spans)
	tr := &runTrace{spans: spans, byID: map[string]span{}}
	var roots []span
	for _, s := range spans {
		tr.byID[s.id()] = s
		if len(s.ParentSpanId) == 0 {
			roots = append(roots, s)
		}
	}
	require.Len(t, roots, 1, "one root: %v", roots)
	tr.root = roots[0]
	for _, s := range spans {
		require.Equal(t, tr.root.TraceId, s.TraceId, "%s is in another trace", s)
		if s.id() != tr.root.id() {
			require.Contains(t, tr.byID, s.parent(), "the parent of %s is missing", s)
		}
	}
	return tr
}

// named is every span service made with name.
func (tr *runTrace) named(service, name string) []span {
	var out []span
	for _, s := range tr.spans {
		if s.service == service && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// ancestor reports whether s descends from a span service made with name.
func (tr *runTrace) ancestor(s span, service, name string) bool {
	for seen := 0; len(s.ParentSpanId) > 0 && seen < len(tr.spans); seen++ {
		s = tr.byID[s.parent()]
		if s.service == service && s.Name == name {
			return true
		}
	}
	return false
}

// tree renders spans as an indented tree under their parents; spans whose
// parent is missing start trees of their own.
func tree(spans []span) string {
	ids := map[string]bool{}
	children := map[string][]span{}
	for _, s := range spans {
		ids[s.id()] = true
	}
	var roots []span
	for _, s := range spans {
		if len(s.ParentSpanId) == 0 || !ids[s.parent()] {
			roots = append(roots, s)
			continue
		}
		children[s.parent()] = append(children[s.parent()], s)
	}
	var b strings.Builder
	var walk func(s span, depth int)
	walk = func(s span, depth int) {
		fmt.Fprintf(&b, "%s%s %s trace=%x status=%s\n", strings.Repeat("  ", depth), s.service, s.Name, s.TraceId, s.Status.GetCode())
		for _, c := range children[s.id()] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
