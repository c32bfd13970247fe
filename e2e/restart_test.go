package e2e

// The design's restart promise, end to end: the NATS server going away
// mid-run, services killed with SIGKILL mid-build and mid-run, and the
// reporter dying while it posts. Each run must still end with every job
// reported once, one verdict, and one vote.

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/reporter"
)

// TestRestartNATSOutage stops the NATS server while a build runs and
// starts it again (same port, same store) only after the build ended, so
// the builder must get its result through an outage.
func TestRestartNATSOutage(t *testing.T) {
	g, m, ps := slowChange(t, 31, "bad", "exit 1")
	srv := natstest.Start(t)
	// A short ack wait: a build whose ack was lost in the outage comes back soon.
	state := startWithGerrit(t, srv.URL, g, "--builder.ack-wait", "2s", "--builder.retry-delay", "200ms")
	g.Push(ps)

	m.wait(t, "slow", "started", 1)
	srv.Stop()
	m.release(t, "slow")
	m.wait(t, "slow", "done", 1)
	// The builder removes a build's log file once it is done with the
	// request: here, once it gave up storing the result in the outage.
	require.Eventually(t, func() bool {
		logs, err := filepath.Glob(filepath.Join(state, "builder", "*", "*-slow.*.log"))
		return err == nil && len(logs) == 0
	}, time.Minute, 20*time.Millisecond, "the builder never gave up on slow's result")
	srv.StartAgain(t)

	_, js := srv.Connect(t)
	v := waitVerdict(t, js, 2*time.Minute)
	requireRunOnce(t, js, v, map[string]nixbuspb.JobStatus{
		"slow": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, "after": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED,
		"bad": nixbuspb.JobStatus_JOB_STATUS_FAILED,
	})
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, v.GetStatus())
	require.Equal(t, 1, m.count("slow", "started"), "slow was built once")

	r := requireOneVote(t, g, js)
	require.Equal(t, "-1", r.Labels["Verified"], r.Raw)
	require.Contains(t, r.Message, " - bad: build failed: ")
}

// TestRestartKilledProcesses runs every service as its own process and
// SIGKILLs the builder in the middle of a build and the planner in the
// middle of the run. The killed build is built again, the planner catches
// up on a result published while it was dead, and the run gets one vote.
func TestRestartKilledProcesses(t *testing.T) {
	bin := buildNixbus(t)
	g, m, ps := slowChange(t, 32, "quick", "echo quick > $out")
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	args := procArgs(srv.URL, t.TempDir(), append(gerritFlags(g),
		"--builder.ack-wait", "2s", "--builder.retry-delay", "200ms", "--reporter.retry-delay", "100ms")...)
	procs := map[string]*proc{}
	for _, name := range app.Names() {
		procs[name] = startProc(t, bin, name, args...)
	}
	g.Push(ps)

	m.wait(t, "slow", "started", 1)
	procs["builder"].kill()
	procs["planner"].kill()
	procs["builder"].start()
	// JetStream hands the killed build to the new builder once its ack
	// wait runs out, and it is built from scratch.
	m.wait(t, "slow", "started", 2)
	m.release(t, "slow")
	// Both free jobs get their results while the planner is dead ("after"
	// needs the planner to release it).
	run := onlyRun(t, js)
	require.Eventually(t, func() bool {
		n, err := natstest.Stored(t.Context(), js, bus.StreamRuns, bus.RunSubject(run, bus.RunResultKind))
		return err == nil && n == 2
	}, time.Minute, 20*time.Millisecond, "no results of slow and quick")
	procs["planner"].start()

	v := waitVerdict(t, js, 2*time.Minute)
	require.Equal(t, run, v.GetRunId())
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, v.GetStatus())
	requireRunOnce(t, js, v, map[string]nixbuspb.JobStatus{
		"slow": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED, "after": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED,
		"quick": nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED,
	})
	require.Equal(t, 2, m.count("slow", "started"))
	require.Equal(t, 1, m.count("slow", "done"), "the killed build died with its builder")

	r := requireOneVote(t, g, js)
	require.Contains(t, []string{"1", "+1"}, r.Labels["Verified"], r.Raw)
}

// TestRestartReporterKilledMidPost kills the reporter while Gerrit holds
// its review request, restarts it, and counts the reviews Gerrit got.
func TestRestartReporterKilledMidPost(t *testing.T) {
	bin := buildNixbus(t)
	for _, tc := range []struct {
		name string
		// applied: Gerrit records the review before the reporter dies.
		applied bool
	}{
		{name: "before Gerrit applied it"},
		{name: "after Gerrit applied it", applied: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rest := gerrittest.NewREST("nixbus", "s3cret-http-password")
			hold := &holdFirst{rest: rest, applied: tc.applied, held: make(chan struct{}), stop: make(chan struct{})}
			web := httptest.NewServer(hold)
			t.Cleanup(web.Close)
			t.Cleanup(func() { close(hold.stop) }) // before web.Close, which waits for handlers
			pw := filepath.Join(t.TempDir(), "password")
			require.NoError(t, os.WriteFile(pw, []byte(rest.Password+"\n"), 0o600))
			srv := natstest.Start(t)
			_, js := srv.Connect(t)
			// A short stale-claim age, so a reporter that takes over the
			// dead one's claim does so within the test.
			rp := startProc(t, bin, "reporter", procArgs(srv.URL, t.TempDir(),
				"--gerrit.review-via", "rest", "--gerrit.http.url", web.URL, "--gerrit.http.user", rest.User,
				"--gerrit.http.password-file", pw, "--reporter.ack-wait", "2s", "--reporter.retry-delay", "100ms",
				"--reporter.stale-claim", "3s", "--reporter.upload-wait", "0")...)

			// The verdict the planner would publish for a patchset's run.
			ctx := t.Context()
			require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamOptions{}))
			// A new durable starts at its service's start: publish once the
			// reporter's consumer exists, or the verdict predates it.
			require.Eventually(t, func() bool {
				_, err := js.Consumer(ctx, bus.StreamReports, reporter.Consumer)
				return err == nil
			}, time.Minute, 20*time.Millisecond, "the reporter never made its consumer")
			run := bus.RunID("restart-test:" + t.Name())
			v := &nixbuspb.RunVerdict{
				RunId: run, Status: nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, JobCount: 1, SucceededCount: 1,
				Change: &nixbuspb.ChangeEvent{EventId: "restart-test", Kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED,
					Project: "demo", Change: 41, Patchset: 2, Ref: "refs/changes/41/41/2"},
			}
			require.NoError(t, bus.NewPublisher(js, logger(t)).Publish(ctx, bus.VerdictSubject(run), bus.MsgIDVerdict(run), v, nil))

			select {
			case <-hold.held:
			case <-time.After(time.Minute):
				t.Fatal("the reporter never posted")
			}
			rp.kill()
			rp.start()

			require.Eventually(t, func() bool {
				n, err := natstest.Stored(ctx, js, bus.StreamReports, bus.ReviewSubject(run))
				return err == nil && n > 0
			}, time.Minute, 20*time.Millisecond, "the review was never recorded")
			waitConsumerIdle(t, js, bus.StreamReports, reporter.Consumer)
			reviews := rest.Reviews()
			require.Equal(t, 1, len(reviews), "one vote, whatever the moment the reporter died")
			require.Equal(t, 1, reviews[0].Labels["Verified"])
		})
	}
}

// holdFirst serves the test Gerrit's REST review endpoint but never
// answers the first review: it holds the request, before or after Gerrit
// applies it, until the client goes away.
type holdFirst struct {
	rest    *gerrittest.REST
	applied bool
	held    chan struct{}
	stop    chan struct{}
	once    sync.Once
}

func (h *holdFirst) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	first := false
	h.once.Do(func() { first = true })
	if !first {
		h.rest.ServeHTTP(w, r)
		return
	}
	if h.applied {
		h.rest.ServeHTTP(httptest.NewRecorder(), r) // applied; the answer is lost
	} else {
		// The server notices a client gone only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
	}
	close(h.held)
	select {
	case <-r.Context().Done():
	case <-h.stop:
	}
}

// slowChange uploads a patchset of a new project whose job "slow" marks
// its start and end in the returned marks and is held in between until
// m.release(t, "slow"), whose "after" depends on "slow", and whose job
// named other runs script on its own.
func slowChange(t *testing.T, change int64, other, script string) (*gerrittest.Server, marks, gerrittest.Event) {
	t.Helper()
	m := newMarks(t)
	g := gerrittest.Start(t, gerrittest.Options{})
	repo := g.CreateProject(t, "demo")
	ps := repo.UploadPatchset(t, change, 1, flake(t, map[string]string{
		"slow":  m.script("slow", m.hold("slow")+"; echo slow > $out"),
		"after": "cat ${slow} > $out",
		other:   script,
	}))
	return g, m, ps
}

// marks is a directory in which builds leave a file as they start and as
// they end, to count attempts. Builds run as nixbld users: it is
// world-writable and outside the test's private temp dirs, and every
// attempt makes its own file (a second attempt may be another user).
type marks string

func newMarks(t *testing.T) marks {
	t.Helper()
	dir, err := os.MkdirTemp("", "nixbus-marks-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o777))
	t.Cleanup(func() { require.NoError(t, os.RemoveAll(dir)) })
	return marks(dir)
}

// script wraps a job's shell script so that it marks its start and end.
func (m marks) script(job, body string) string {
	mark := func(what string) string {
		return "mktemp -p " + string(m) + " " + job + "." + what + ".XXXXXX >/dev/null"
	}
	return mark("started") + "; " + body + "; " + mark("done")
}

// hold is a script that waits until the test calls release for job: a
// build held at a point the test chose, for as long as the test needs.
func (m marks) hold(job string) string {
	return "while [ ! -e " + filepath.Join(string(m), job+".release") + " ]; do sleep 0.05; done"
}

// release lets every build of job held with hold go on.
func (m marks) release(t *testing.T, job string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(string(m), job+".release"), nil, 0o644))
}

func (m marks) count(job, what string) int {
	// Glob fails only on a malformed pattern, and job names are plain.
	files, _ := filepath.Glob(filepath.Join(string(m), job+"."+what+".*"))
	return len(files)
}

func (m marks) wait(t *testing.T, job, what string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return m.count(job, what) >= n }, time.Minute, 20*time.Millisecond,
		"%s never %s %d times", job, what, n)
}

// onlyRun is the id of the one run started so far.
func onlyRun(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	stream, err := js.Stream(t.Context(), bus.StreamRuns)
	require.NoError(t, err)
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(bus.RunStarts))
	require.NoError(t, err)
	require.Len(t, info.State.Subjects, 1)
	for subject := range info.State.Subjects {
		run, _, err := bus.ParseRunSubject(subject)
		require.NoError(t, err)
		return run
	}
	return ""
}

// waitVerdict returns the first run verdict on the bus.
func waitVerdict(t testing.TB, js jetstream.JetStream, timeout time.Duration) *nixbuspb.RunVerdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, bus.StreamReports, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.VerdictAll}})
	require.NoError(t, err)
	msg, err := cons.Next(jetstream.FetchContext(ctx))
	require.NoError(t, err, "no verdict")
	var v nixbuspb.RunVerdict
	require.NoError(t, bus.Decode(msg.Data(), &v))
	return &v
}

// requireRunOnce checks that v is its run's only verdict and that each
// job's outcome was reported exactly once, with the status wanted.
func requireRunOnce(t *testing.T, js jetstream.JetStream, v *nixbuspb.RunVerdict, want map[string]nixbuspb.JobStatus) {
	t.Helper()
	require.Len(t, natstest.Read[nixbuspb.RunVerdict](t, js, bus.StreamReports, bus.VerdictSubject(v.GetRunId())), 1, "one verdict")
	got := map[string]nixbuspb.JobStatus{}
	for _, o := range natstest.Read[nixbuspb.JobOutcome](t, js, bus.StreamReports, bus.OutcomeSubject(v.GetRunId())) {
		_, dup := got[o.GetAttr()]
		require.False(t, dup, "%s reported twice", o.GetAttr())
		got[o.GetAttr()] = o.GetStatus()
	}
	require.Equal(t, want, got)
	require.EqualValues(t, len(want), v.GetJobCount())
	buildResults(t, js, v.GetRunId())
}

// buildResults are a run's build results by derivation; it fails the
// test if a derivation has two.
func buildResults(t *testing.T, js jetstream.JetStream, run string) map[string]*nixbuspb.BuildResult {
	t.Helper()
	out := map[string]*nixbuspb.BuildResult{}
	for _, r := range natstest.Read[nixbuspb.BuildResult](t, js, bus.StreamRuns, bus.RunSubject(run, bus.RunResultKind)) {
		require.NotContains(t, out, r.GetDrvPath(), "%s built twice", r.GetDrvPath())
		out[r.GetDrvPath()] = r
	}
	return out
}

// requireOneVote waits for the run's review, lets the reporter finish
// everything it has, and requires that Gerrit got that one review only.
func requireOneVote(t *testing.T, g *gerrittest.Server, js jetstream.JetStream) gerrittest.ReviewCommand {
	t.Helper()
	g.WaitReviews(t, 1)
	waitConsumerIdle(t, js, bus.StreamReports, reporter.Consumer)
	reviews := g.Reviews()
	require.Len(t, reviews, 1, "one vote")
	return reviews[0]
}
