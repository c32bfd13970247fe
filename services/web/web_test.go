package web

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

type fixture struct {
	js  jetstream.JetStream
	svc *Service
	srv *httptest.Server
	pub *bus.Publisher
}

func testConfig() Config {
	return Config{BaseURL: "http://nixbus.test", PublicRead: true, Issuer: "http://oidc.invalid", ClientID: "nixbus",
		SessionTTL: time.Hour, MaxRuns: 1000, PageSize: 100, RunCache: 2, MaxLiveClients: 4, Heartbeat: time.Hour}
}

func start(t testing.TB, cfg Config) *fixture {
	t.Helper()
	return startAt(t, func(string) Config { return cfg })
}

// startAt serves the pages on a test server whose URL configure gets.
func startAt(t testing.TB, configure func(baseURL string) Config) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	var handler http.Handler
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	svc, err := New(configure(hs.URL), Deps{JS: js, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	handler = svc.Handler()
	runCtx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		stop()
		require.NoError(t, <-done)
	})
	return &fixture{js: js, svc: svc, srv: hs, pub: bus.NewPublisher(js, slog.New(slog.DiscardHandler))}
}

const (
	drvOK     = "/nix/store/00000000000000000000000000000001-ok.drv"
	drvBroken = "/nix/store/00000000000000000000000000000002-broken.drv"
	drvAfter  = "/nix/store/00000000000000000000000000000003-after.drv"
	drvSlow   = "/nix/store/00000000000000000000000000000004-slow.drv"
)

// finishedRun publishes a run that ended: ok built, broken failed, after
// skipped, and an eval error.
func (f *fixture) finishedRun(t *testing.T, run string) {
	t.Helper()
	ctx := t.Context()
	p := f.pub
	ch := &nixbuspb.ChangeEvent{EventId: "ev-" + run, Project: "demo", Change: 7, Patchset: 2, Kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED}
	require.NoError(t, p.Publish(ctx, bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run), &nixbuspb.RunStarted{RunId: run, Change: ch, StartedUnixMs: 1}, nil))
	jobs := []*nixbuspb.Job{
		{RunId: run, Attr: "ok", DrvPath: drvOK, System: "x86_64-linux"},
		{RunId: run, Attr: "broken", DrvPath: drvBroken, System: "x86_64-linux"},
		{RunId: run, Attr: "after", DrvPath: drvAfter, System: "x86_64-linux", DependsOn: []string{drvBroken}},
		{RunId: run, Attr: "eval-error", EvalError: "error: <script>alert(1)</script> does not evaluate"},
	}
	for _, j := range jobs {
		require.NoError(t, p.Publish(ctx, bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, j.Attr), j, nil))
	}
	require.NoError(t, p.Publish(ctx, bus.RunSubject(run, bus.RunEvalKind), bus.MsgIDEvalDone(run), &nixbuspb.EvalDone{RunId: run, JobCount: 4}, nil))
	for _, r := range []*nixbuspb.BuildResult{
		{RunId: run, DrvPath: drvOK, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Builder: "b1", DurationMs: 1500},
		{RunId: run, DrvPath: drvBroken, Status: nixbuspb.BuildStatus_BUILD_STATUS_FAILED, Builder: "b2", Error: "exit 1"},
	} {
		require.NoError(t, p.Publish(ctx, bus.RunSubject(run, bus.RunResultKind), bus.MsgIDResult(run, r.DrvPath), r, nil))
	}
	for _, o := range []*nixbuspb.JobOutcome{
		{RunId: run, Attr: "ok", DrvPath: drvOK, Status: nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED},
		{RunId: run, Attr: "broken", DrvPath: drvBroken, Status: nixbuspb.JobStatus_JOB_STATUS_FAILED, Failure: nixbuspb.FailureKind_FAILURE_KIND_BUILD, Reason: "exit 1"},
		{RunId: run, Attr: "after", DrvPath: drvAfter, Status: nixbuspb.JobStatus_JOB_STATUS_SKIPPED, Failure: nixbuspb.FailureKind_FAILURE_KIND_DEPENDENCY, Reason: "dependency broken failed"},
		{RunId: run, Attr: "eval-error", Status: nixbuspb.JobStatus_JOB_STATUS_FAILED, Failure: nixbuspb.FailureKind_FAILURE_KIND_EVAL, Reason: "error: <script>alert(1)</script> does not evaluate"},
	} {
		require.NoError(t, p.Publish(ctx, bus.OutcomeSubject(run), bus.MsgIDOutcome(run, o.Attr), o, nil))
	}
	v := &nixbuspb.RunVerdict{RunId: run, Change: ch, Status: nixbuspb.RunStatus_RUN_STATUS_FAILED, JobCount: 4, SucceededCount: 1, FailedCount: 2, SkippedCount: 1}
	require.NoError(t, p.Publish(ctx, bus.VerdictSubject(run), bus.MsgIDVerdict(run), v, nil))
}

// runningRun publishes a run with one build running and one waiting on it.
func (f *fixture) runningRun(t *testing.T, run string) {
	t.Helper()
	ctx := t.Context()
	ch := &nixbuspb.ChangeEvent{EventId: "ev-" + run, Project: "other", Change: 8, Patchset: 1}
	require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run), &nixbuspb.RunStarted{RunId: run, Change: ch, StartedUnixMs: 2}, nil))
	for _, j := range []*nixbuspb.Job{
		{RunId: run, Attr: "slow", DrvPath: drvSlow, System: "x86_64-linux"},
		{RunId: run, Attr: "after-slow", DrvPath: drvAfter, System: "x86_64-linux", DependsOn: []string{drvSlow}},
	} {
		require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, j.Attr), j, nil))
	}
	f.chunk(t, run, drvSlow, 0, 1, "building slow\n", false)
}

func (f *fixture) chunk(t *testing.T, run, drv string, seq int64, delivery uint64, text string, final bool) {
	t.Helper()
	c := &nixbuspb.LogChunk{RunId: run, DrvPath: drv, Delivery: delivery, Seq: seq, Data: []byte(text), Final: final}
	require.NoError(t, f.pub.Publish(t.Context(), bus.LogSubject(run, drv), bus.MsgIDLogChunk(run, drv, 0, delivery, seq), c, nil))
}

func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer func() { require.NoError(t, resp.Body.Close()) }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// session is a cookie of a logged-in user, as the callback would set it.
func (f *fixture) session(t *testing.T, u user) *http.Cookie {
	t.Helper()
	u.Exp = time.Now().Add(time.Hour).Unix()
	v, err := f.svc.auth.sign(u)
	require.NoError(t, err)
	return &http.Cookie{Name: sessionCookie, Value: v}
}

func (f *fixture) waitListed(t *testing.T, run string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, ok := f.svc.index.get(run)
		return ok
	}, 10*time.Second, 10*time.Millisecond)
}

func TestPagesShowRunsAndJobs(t *testing.T) {
	f := start(t, testConfig())
	f.finishedRun(t, "rdone")
	f.runningRun(t, "rbusy")
	f.waitListed(t, "rdone")
	f.waitListed(t, "rbusy")
	require.Eventually(t, func() bool { r, _ := f.svc.index.get("rdone"); return r.Status == stFailed }, 10*time.Second, 10*time.Millisecond)

	code, body := get(t, http.DefaultClient, f.srv.URL+"/")
	require.Equal(t, http.StatusOK, code)
	require.Less(t, strings.Index(body, "rbusy"), strings.Index(body, "rdone"), "newest first")
	require.Contains(t, body, "4: 1 built, 0 cached, 2 failed, 1 skipped")

	_, body = get(t, http.DefaultClient, f.srv.URL+"/?status=failed")
	require.Contains(t, body, "rdone")
	require.NotContains(t, body, "/runs/rbusy")
	_, body = get(t, http.DefaultClient, f.srv.URL+"/?project=other")
	require.Contains(t, body, "/runs/rbusy")
	require.NotContains(t, body, "/runs/rdone")

	code, body = get(t, http.DefaultClient, f.srv.URL+"/runs/rdone")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "dependency broken failed")
	require.Contains(t, body, "&lt;script&gt;alert(1)&lt;/script&gt;", "eval errors are escaped")
	require.NotContains(t, body, "<script>alert(1)")
	require.Contains(t, body, ">b2<", "builder shown")
	require.NotContains(t, body, "restart-job", "no buttons for anonymous readers")

	_, body = get(t, http.DefaultClient, f.srv.URL+"/runs/rbusy")
	require.Contains(t, body, `st-building">building`)
	require.Contains(t, body, "waiting on slow")

	_, body = get(t, http.DefaultClient, f.srv.URL+"/runs/rbusy/jobs/"+bus.DrvBase(drvSlow))
	require.Contains(t, body, `data-live="/runs/rbusy/jobs/`+bus.DrvBase(drvSlow)+`/live"`)
	code, body = get(t, http.DefaultClient, f.srv.URL+"/runs/rbusy/jobs/"+bus.DrvBase(drvSlow)+"/log")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "building slow\n", body, "the raw log falls back to the live chunks")

	code, _ = get(t, http.DefaultClient, f.srv.URL+"/runs/nosuch")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, http.DefaultClient, f.srv.URL+"/runs/rdone/jobs/..%2f..%2fetc")
	require.Equal(t, http.StatusNotFound, code)
}

func TestPagination(t *testing.T) {
	cfg := testConfig()
	cfg.PageSize = 20
	cfg.MaxRuns = 45
	f := start(t, cfg)
	for i := range 50 {
		run := fmt.Sprintf("r%03d", i)
		ch := &nixbuspb.ChangeEvent{Project: []string{"a", "b"}[i%2], Change: int64(i)}
		require.NoError(t, f.pub.Publish(t.Context(), bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run), &nixbuspb.RunStarted{RunId: run, Change: ch}, nil))
	}
	// And one run of 250 jobs.
	ctx := t.Context()
	require.NoError(t, f.pub.Publish(ctx, bus.RunSubject("rbig", bus.RunStartedKind), bus.MsgIDStarted("rbig"), &nixbuspb.RunStarted{RunId: "rbig", Change: &nixbuspb.ChangeEvent{}}, nil))
	for i := range 250 {
		attr := fmt.Sprintf("job%03d", i)
		j := &nixbuspb.Job{RunId: "rbig", Attr: attr, DrvPath: fmt.Sprintf("/nix/store/%032d-%s.drv", i, attr), System: "x86_64-linux"}
		require.NoError(t, f.pub.Publish(ctx, bus.RunSubject("rbig", bus.RunJobKind), bus.MsgIDJob("rbig", attr), j, nil))
	}
	f.waitListed(t, "rbig")

	rows := func(body string) int { return strings.Count(body, `<td><a href="/runs/`) }
	_, body := get(t, http.DefaultClient, f.srv.URL+"/")
	require.Equal(t, 20, rows(body))
	require.Contains(t, body, "Page 1 of 3 (45 in all)", "at most MaxRuns kept")
	require.Contains(t, body, "/runs/rbig")
	_, body = get(t, http.DefaultClient, f.srv.URL+"/?page=3")
	require.Equal(t, 5, rows(body))
	require.Contains(t, body, "/runs/r006")
	require.NotContains(t, body, "/runs/r005", "the oldest were dropped")
	_, body = get(t, http.DefaultClient, f.srv.URL+"/?project=a&page=2")
	require.Equal(t, 2, rows(body), "22 runs of project a are kept: 20 + 2")
	require.NotContains(t, body, "/runs/r007")

	jobRows := func(body string) int { return strings.Count(body, `<td><a href="/runs/rbig/jobs/`) }
	_, body = get(t, http.DefaultClient, f.srv.URL+"/runs/rbig")
	require.Equal(t, 20, jobRows(body))
	require.Contains(t, body, "250 queued")
	_, body = get(t, http.DefaultClient, f.srv.URL+"/runs/rbig?page=13")
	require.Equal(t, 10, jobRows(body))
	require.Contains(t, body, "job249")
	_, body = get(t, http.DefaultClient, f.srv.URL+"/runs/rbig?page=99")
	require.Equal(t, 0, jobRows(body))
}

func TestActionsNeedAdminAndCSRF(t *testing.T) {
	f := start(t, testConfig())
	f.finishedRun(t, "rdone")
	f.finishedRun(t, "rgone")
	require.NoError(t, f.pub.Publish(t.Context(), bus.RunSubject("rgone", bus.RunCancelKind), bus.MsgIDCancel("rgone"),
		&nixbuspb.Cancel{RunId: "rgone", Reason: "run deadline passed"}, nil))
	f.runningRun(t, "rbusy")
	f.waitListed(t, "rbusy")
	admin := user{Sub: "admin-sub", Name: "alice", Admin: true, CSRF: "token-a"}
	reader := user{Sub: "reader-sub", Name: "bob", CSRF: "token-b"}
	cancelURL := "/runs/rbusy/cancel"
	restartJob := "/runs/rdone/jobs/" + bus.DrvBase(drvBroken) + "/restart"
	tests := []struct {
		name    string
		path    string
		user    *user
		csrf    string
		site    string // Sec-Fetch-Site
		want    int
		publish string // subject that must then hold a message
	}{
		{"anonymous", cancelURL, nil, "", "", http.StatusUnauthorized, ""},
		{"non-admin", cancelURL, &reader, "token-b", "same-origin", http.StatusForbidden, ""},
		{"admin without token", cancelURL, &admin, "", "same-origin", http.StatusForbidden, ""},
		{"admin with another's token", cancelURL, &admin, "token-b", "same-origin", http.StatusForbidden, ""},
		{"cross-site admin", cancelURL, &admin, "token-a", "cross-site", http.StatusForbidden, ""},
		{"non-admin restart job", restartJob, &reader, "token-b", "", http.StatusForbidden, ""},
		{"restart a job that succeeded", "/runs/rdone/jobs/" + bus.DrvBase(drvOK) + "/restart", &admin, "token-a", "", http.StatusConflict, ""},
		{"restart a skipped job", "/runs/rdone/jobs/" + bus.DrvBase(drvAfter) + "/restart", &admin, "token-a", "", http.StatusConflict, ""},
		{"restart a job of a cancelled run", "/runs/rgone/jobs/" + bus.DrvBase(drvBroken) + "/restart", &admin, "token-a", "", http.StatusConflict, ""},
		{"cancel an ended run", "/runs/rdone/cancel", &admin, "token-a", "", http.StatusConflict, ""},
		{"admin cancels", cancelURL, &admin, "token-a", "same-origin", http.StatusSeeOther, bus.RunSubject("rbusy", bus.RunCancelKind)},
		{"admin restarts a failed job", restartJob, &admin, "token-a", "", http.StatusSeeOther, bus.RunSubject("rdone", bus.RunRestartKind)},
		{"admin restarts a run", "/runs/rdone/restart", &admin, "token-a", "", http.StatusSeeOther, bus.ChangeSubject("demo")},
	}
	// Nothing is published before the admin's own presses.
	for _, subject := range []string{bus.RunSubject("rbusy", bus.RunCancelKind), bus.RunSubject("rdone", bus.RunRestartKind)} {
		require.Empty(t, natstest.Read[nixbuspb.Cancel](t, f.js, bus.StreamRuns, subject))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"csrf": {tt.csrf}}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.srv.URL+tt.path, strings.NewReader(form.Encode()))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.site != "" {
				req.Header.Set("Sec-Fetch-Site", tt.site)
			}
			if tt.user != nil {
				req.AddCookie(f.session(t, *tt.user))
			}
			resp, err := noRedirect().Do(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, tt.want, resp.StatusCode)
			if tt.publish == "" {
				return
			}
			stream := bus.StreamRuns
			if strings.HasPrefix(tt.publish, "nixbus.change.") {
				stream = bus.StreamChanges
			}
			switch tt.publish {
			case bus.RunSubject("rbusy", bus.RunCancelKind):
				c := natstest.Read[nixbuspb.Cancel](t, f.js, stream, tt.publish)
				require.Len(t, c, 1)
				require.Contains(t, c[0].GetReason(), "alice")
			case bus.RunSubject("rdone", bus.RunRestartKind):
				r := natstest.Read[nixbuspb.RestartJob](t, f.js, stream, tt.publish)
				require.Len(t, r, 1)
				require.Equal(t, drvBroken, r[0].GetDrvPath())
				require.Equal(t, "broken", r[0].GetAttr())
			default:
				st, err := f.js.Stream(t.Context(), stream)
				require.NoError(t, err)
				raw, err := st.GetLastMsgForSubject(t.Context(), tt.publish) // a work queue: no consumer
				require.NoError(t, err)
				evs := []*nixbuspb.ChangeEvent{{}}
				require.NoError(t, bus.Decode(raw.Data, evs[0]))
				require.Equal(t, int64(7), evs[0].GetChange())
				require.Equal(t, int32(2), evs[0].GetPatchset())
				require.Equal(t, nixbuspb.ChangeEvent_KIND_MANUAL, evs[0].GetKind())
				require.Equal(t, "/runs/"+bus.RunID(evs[0].GetEventId()), resp.Header.Get("Location"))
			}
		})
	}
	// The restart shows on the job, which can then not be restarted again.
	_, body := get(t, http.DefaultClient, f.srv.URL+"/runs/rdone")
	require.Contains(t, body, `st-restarting">restarting`)
}

func TestPrivatePagesNeedLogin(t *testing.T) {
	cfg := testConfig()
	cfg.PublicRead = false
	f := start(t, cfg)
	f.finishedRun(t, "rdone")
	for _, path := range []string{"/", "/runs/rdone", "/runs/rdone/jobs/" + bus.DrvBase(drvOK) + "/log"} {
		resp, err := noRedirect().Get(f.srv.URL + path)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusFound, resp.StatusCode, path)
		require.Equal(t, "/login?next="+url.QueryEscape(path), resp.Header.Get("Location"))
	}
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	u, err := url.Parse(f.srv.URL)
	require.NoError(t, err)
	jar.SetCookies(u, []*http.Cookie{f.session(t, user{Sub: "x", Name: "reader", CSRF: "t"})})
	code, body := get(t, &http.Client{Jar: jar}, f.srv.URL+"/runs/rdone")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "reader")
	// A tampered cookie is nobody.
	bad := f.session(t, user{Sub: "x", Name: "reader", CSRF: "t"})
	bad.Value = strings.Replace(bad.Value, ".", "x.", 1)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL+"/", nil)
	require.NoError(t, err)
	req.AddCookie(bad)
	resp, err := noRedirect().Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusFound, resp.StatusCode)
}

// The live log streams chunks as they come, starts over for a newer
// attempt, and ends with the attempt.
func TestLiveLogEvents(t *testing.T) {
	f := start(t, testConfig())
	f.runningRun(t, "rbusy")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL+"/runs/rbusy/jobs/"+bus.DrvBase(drvSlow)+"/live", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { require.NoError(t, resp.Body.Close()) }()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && ev != "":
				events <- ev + " " + strings.TrimPrefix(line, "data: ")
				ev = ""
			}
		}
	}()
	next := func() string {
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
			return ""
		}
	}
	require.Equal(t, `chunk "building slow\n"`, next())
	f.chunk(t, "rbusy", drvSlow, 1, 1, "é"[:1], false) // half a rune
	f.chunk(t, "rbusy", drvSlow, 2, 1, "é"[1:]+"tape 2\n", false)
	require.Equal(t, `chunk "étape 2\n"`, next())
	f.chunk(t, "rbusy", drvSlow, 0, 2, "second attempt\n", false)
	require.Equal(t, "reset {}", next())
	require.Equal(t, `chunk "second attempt\n"`, next())
	f.chunk(t, "rbusy", drvSlow, 1, 2, "", true)
	require.Equal(t, `end {"truncated":false}`, next())
	_, open := <-events
	require.False(t, open, "the stream ends with the attempt")
}

// TestCachedFailureShowsTheFirstLog: a job failed from the failed-build
// cache was not built in its run; its page shows the log of the build that
// failed first, and links that run and that raw log.
func TestCachedFailureShowsTheFirstLog(t *testing.T) {
	f := start(t, testConfig())
	ctx := t.Context()
	base := bus.DrvBase(drvBroken)
	store, err := f.js.ObjectStore(ctx, bus.LogBucket)
	require.NoError(t, err)
	_, err = store.PutBytes(ctx, "rfirst/"+base, []byte("the first failure's log\n"))
	require.NoError(t, err)

	run := "rsecond"
	ch := &nixbuspb.ChangeEvent{EventId: "ev-" + run, Project: "demo", Change: 9, Patchset: 1}
	require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run), &nixbuspb.RunStarted{RunId: run, Change: ch, StartedUnixMs: 3}, nil))
	require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, "broken"),
		&nixbuspb.Job{RunId: run, Attr: "broken", DrvPath: drvBroken, System: "x86_64-linux"}, nil))
	require.NoError(t, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunEvalKind), bus.MsgIDEvalDone(run), &nixbuspb.EvalDone{RunId: run, JobCount: 1}, nil))
	o := &nixbuspb.JobOutcome{RunId: run, Attr: "broken", DrvPath: drvBroken, Status: nixbuspb.JobStatus_JOB_STATUS_FAILED,
		Failure: nixbuspb.FailureKind_FAILURE_KIND_CACHED, Reason: "failed in an earlier build (cached failure): exit 1", LogKey: "rfirst/" + base}
	require.NoError(t, f.pub.Publish(ctx, bus.OutcomeSubject(run), bus.MsgIDOutcome(run, o.Attr), o, nil))
	require.NoError(t, f.pub.Publish(ctx, bus.VerdictSubject(run), bus.MsgIDVerdict(run),
		&nixbuspb.RunVerdict{RunId: run, Change: ch, Status: nixbuspb.RunStatus_RUN_STATUS_FAILED, JobCount: 1, FailedCount: 1}, nil))
	f.waitListed(t, run)
	require.Eventually(t, func() bool { r, _ := f.svc.index.get(run); return r.Status == stFailed }, 10*time.Second, 10*time.Millisecond)

	code, body := get(t, http.DefaultClient, f.srv.URL+"/runs/"+run+"/jobs/"+base)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "the first failure&#39;s log")
	require.Contains(t, body, `href="/runs/rfirst/jobs/`+base+`"`)
	require.Contains(t, body, `href="/runs/rfirst/jobs/`+base+`/log"`, "the raw log is the first build's")
	require.NotContains(t, body, "this job was not built")
}
