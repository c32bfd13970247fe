package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
)

var (
	drvBaseRe = regexp.MustCompile(`^[0-9a-z]{32}-[A-Za-z0-9+\-._?=]{1,211}\.drv$`)
)

// shownLogBytes is the tail of a stored log shown on a job page; the raw
// log link has all of it.
const shownLogBytes = 256 << 10

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.read(s.runsPage))
	mux.HandleFunc("GET /runs/{run}", s.read(s.runPage))
	mux.HandleFunc("GET /runs/{run}/jobs/{drv}", s.read(s.jobPage))
	mux.HandleFunc("GET /runs/{run}/jobs/{drv}/log", s.read(s.rawLog))
	mux.HandleFunc("GET /runs/{run}/jobs/{drv}/live", s.read(s.liveLog))
	mux.HandleFunc("POST /runs/{run}/cancel", s.admin("cancel-run", s.cancelRun))
	mux.HandleFunc("POST /runs/{run}/restart", s.admin("restart-run", s.restartRun))
	mux.HandleFunc("POST /runs/{run}/jobs/{drv}/restart", s.admin("restart-job", s.restartJob))
	mux.HandleFunc("GET /login", s.login)
	mux.HandleFunc("GET /auth/callback", s.callback)
	mux.HandleFunc("POST /logout", s.logout)
	// Browsers say where a request comes from: cross-site POSTs are refused
	// before a handler runs (the CSRF token is the second line).
	cop := http.NewCrossOriginProtection()
	return securityHeaders(cop.Handler(mux))
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self' ; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// read lets a request read when pages are public or it is logged in.
func (s *Service) read(h func(http.ResponseWriter, *http.Request, user)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u := s.auth.user(r)
		if !s.cfg.PublicRead && !u.LoggedIn() {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusFound)
			return
		}
		h(w, r, u)
	}
}

// admin lets a POST through only from an admin's session carrying its
// CSRF token.
func (s *Service) admin(action string, h func(http.ResponseWriter, *http.Request, user) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u := s.auth.user(r)
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		switch {
		case !u.LoggedIn():
			s.metrics.actions.WithLabelValues(action, "denied").Inc()
			s.fail(w, r, u, http.StatusUnauthorized, "Log in as an admin to do this.")
			return
		case !validCSRF(r, u):
			s.metrics.actions.WithLabelValues(action, "denied").Inc()
			s.fail(w, r, u, http.StatusForbidden, "This form is stale or was not sent by this site; reload the page and try again.")
			return
		case !u.Admin:
			s.metrics.actions.WithLabelValues(action, "denied").Inc()
			s.fail(w, r, u, http.StatusForbidden, "Only admins may do this.")
			return
		}
		if err := h(w, r, u); err != nil {
			s.metrics.actions.WithLabelValues(action, "error").Inc()
			var ue userError
			if errors.As(err, &ue) {
				s.fail(w, r, u, ue.code, ue.msg)
				return
			}
			s.logger.Error("action", "action", action, "user", u.Sub, "err", err)
			s.fail(w, r, u, http.StatusServiceUnavailable, "The bus did not take the request; try again.")
			return
		}
		s.metrics.actions.WithLabelValues(action, "ok").Inc()
		s.logger.Info("action", "action", action, "user", u.Sub, "path", r.URL.Path)
	}
}

func validCSRF(r *http.Request, u user) bool {
	got := r.PostFormValue("csrf")
	return u.CSRF != "" && len(got) == len(u.CSRF) && got == u.CSRF
}

// userError is a refusal the user is told about as is.
type userError struct {
	code int
	msg  string
}

func (e userError) Error() string { return e.msg }

type page struct {
	Title string
	User  user
	Login bool // login is configured
	Path  string
	Data  any
}

func (s *Service) render(w http.ResponseWriter, r *http.Request, u user, code int, name, title string, data any) {
	var b bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&b, name, page{Title: title, User: u, Login: s.auth.enabled(), Path: r.URL.RequestURI(), Data: data}); err != nil {
		s.logger.Error("render", "page", name, "err", err)
		http.Error(w, "page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

func (s *Service) fail(w http.ResponseWriter, r *http.Request, u user, code int, msg string) {
	s.render(w, r, u, code, "error.html", http.StatusText(code), msg)
}

func pageOf(r *http.Request) int {
	p, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || p < 1 {
		return 0
	}
	return min(p-1, 1_000_000)
}

// pager is the data of the previous/next links.
type pager struct {
	Page, Pages, Total int
	Prev, Next         string
}

func newPager(r *http.Request, page, size, total int) pager {
	p := pager{Page: page + 1, Pages: max((total+size-1)/size, 1), Total: total}
	link := func(n int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(n))
		return r.URL.Path + "?" + q.Encode()
	}
	if page > 0 {
		p.Prev = link(page)
	}
	if (page+1)*size < total {
		p.Next = link(page + 2)
	}
	return p
}

type runsData struct {
	Runs     []runSummary
	Filter   runFilter
	Projects []string
	Statuses []string
	Pager    pager
}

func (s *Service) runsPage(w http.ResponseWriter, r *http.Request, u user) {
	q := r.URL.Query()
	f := runFilter{Project: q.Get("project"), Change: q.Get("change"), Status: q.Get("status")}
	page := pageOf(r)
	runs, total := s.index.list(f, page, s.cfg.PageSize)
	s.render(w, r, u, http.StatusOK, "runs.html", "Runs", runsData{
		Runs: runs, Filter: f, Projects: s.index.projects(), Statuses: []string{stRunning, stSucceeded, stFailed, stCancelled},
		Pager: newPager(r, page, s.cfg.PageSize, total),
	})
}

type runData struct {
	ID        string
	Summary   runSummary
	Known     bool // in the runs index
	Project   string
	Change    int64
	Patchset  int32
	Ref       string
	Started   int64
	EvalError string
	Evaluated bool
	JobCount  int
	Ended     bool
	Cancelled string
	Counts    []count
	Jobs      []jobRow
	Critical  *critical
	Status    string
	Pager     pager
	Statuses  []string
}

type count struct {
	Status string
	N      int
}

func (s *Service) runPage(w http.ResponseWriter, r *http.Request, u user) {
	id := r.PathValue("run")
	if !bus.ValidRunID(id) {
		s.fail(w, r, u, http.StatusNotFound, "No such run.")
		return
	}
	rs, err := s.runs.look(r.Context(), s.js, id)
	if errors.Is(err, errNoRun) {
		s.fail(w, r, u, http.StatusNotFound, "No such run.")
		return
	}
	if err != nil {
		s.logger.Warn("read run", "run", id, "err", err)
		s.fail(w, r, u, http.StatusServiceUnavailable, "The bus did not answer; try again.")
		return
	}
	building := s.buildingSet(r, id)
	rows := rs.rows(building)
	d := runData{ID: id, JobCount: len(rows), Ended: rs.verdict != nil, Status: r.URL.Query().Get("status"), Statuses: jobStates}
	if st := rs.started; st != nil {
		ch := st.GetChange()
		d.Project, d.Change, d.Patchset, d.Ref, d.Started = ch.GetProject(), ch.GetChange(), ch.GetPatchset(), ch.GetRef(), st.GetStartedUnixMs()
	}
	if e := rs.evalDone; e != nil {
		d.Evaluated, d.EvalError = true, e.GetError()
	}
	if c := rs.cancel; c != nil {
		d.Cancelled = firstOf(c.GetReason(), "cancelled")
	}
	d.Critical = rs.criticalPath(rows)
	d.Summary, d.Known = s.index.get(id)
	if v := rs.verdict; v != nil {
		d.Summary.Status = runStatusWord(v.GetStatus())
		d.Summary.DurationMs = v.GetDurationMs()
	} else {
		d.Summary.Status = stRunning
	}
	rs.mu.Unlock()

	counts := map[string]int{}
	var shown []jobRow
	for _, row := range rows {
		counts[row.Status]++
		if d.Status == "" || row.Status == d.Status {
			shown = append(shown, row)
		}
	}
	for _, st := range jobStates {
		if counts[st] > 0 {
			d.Counts = append(d.Counts, count{st, counts[st]})
		}
	}
	page := pageOf(r)
	from := min(page*s.cfg.PageSize, len(shown))
	d.Jobs = shown[from:min(from+s.cfg.PageSize, len(shown))]
	d.Pager = newPager(r, page, s.cfg.PageSize, len(shown))
	s.render(w, r, u, http.StatusOK, "run.html", "Run "+id, d)
}

// buildingSet reports which builds of run have streamed a live log.
func (s *Service) buildingSet(r *http.Request, run string) func(string) bool {
	subjects := map[string]uint64{}
	if st, err := s.js.Stream(r.Context(), bus.StreamLogs); err == nil {
		if info, err := st.Info(r.Context(), jetstream.WithSubjectFilter(bus.LogRunSubjects(run))); err == nil {
			subjects = info.State.Subjects
		}
	}
	return func(drv string) bool { return drv != "" && subjects[bus.LogSubject(run, drv)] > 0 }
}

type jobData struct {
	Run      string
	Drv      string
	Row      jobRow
	Attrs    []string
	Ended    bool
	Log      string
	LogCut   bool
	Live     bool
	HasLog   bool
	LiveURL  string
	RawURL   string
	Restarts bool
	// LogRun and LogDrv: the log shown is of an earlier run's build (a
	// cached failure), not built in this run.
	LogRun, LogDrv string
}

func (s *Service) jobPage(w http.ResponseWriter, r *http.Request, u user) {
	id, drv := r.PathValue("run"), r.PathValue("drv")
	if !bus.ValidRunID(id) || !drvBaseRe.MatchString(drv) {
		s.fail(w, r, u, http.StatusNotFound, "No such job.")
		return
	}
	rs, err := s.runs.look(r.Context(), s.js, id)
	if errors.Is(err, errNoRun) {
		s.fail(w, r, u, http.StatusNotFound, "No such run.")
		return
	}
	if err != nil {
		s.fail(w, r, u, http.StatusServiceUnavailable, "The bus did not answer; try again.")
		return
	}
	rows := rs.rows(s.buildingSet(r, id))
	ended := rs.verdict != nil
	rs.mu.Unlock()
	d := jobData{Run: id, Drv: drv, Ended: ended}
	found := false
	for _, row := range rows {
		if row.DrvBase == drv {
			if !found {
				d.Row = row
			}
			found = true
			d.Attrs = append(d.Attrs, row.Attr)
		}
	}
	if !found {
		s.fail(w, r, u, http.StatusNotFound, "No such job in this run.")
		return
	}
	base := "/runs/" + url.PathEscape(id) + "/jobs/" + url.PathEscape(drv)
	d.LiveURL, d.RawURL = base+"/live", base+"/log"
	switch d.Row.Status {
	case jsBuilding, jsQueued, jsWaiting, jsRestart:
		d.Live = true
		if seq := d.Row.restartSeq; seq > 0 {
			// Follow the rebuild, not the build that failed.
			d.LiveURL += "?restart=" + strconv.FormatUint(seq, 10)
		}
	default:
		logRun, logDrv := id, drv
		if d.Row.logRun != "" {
			logRun, logDrv = d.Row.logRun, d.Row.logDrv
			d.LogRun, d.LogDrv = logRun, logDrv
			d.RawURL = "/runs/" + url.PathEscape(logRun) + "/jobs/" + url.PathEscape(logDrv) + "/log"
		}
		text, cut, ok, err := s.storedLog(r, logRun, logDrv)
		if err != nil {
			s.logger.Warn("read log", "run", logRun, "drv", logDrv, "err", err)
		}
		d.Log, d.LogCut, d.HasLog = text, cut, ok
	}
	s.render(w, r, u, http.StatusOK, "job.html", d.Row.Attr, d)
}

// storedLog is the tail of a finished build's log.
func (s *Service) storedLog(r *http.Request, run, drv string) (text string, cut, ok bool, err error) {
	store, err := s.js.ObjectStore(r.Context(), bus.LogBucket)
	if err != nil {
		return "", false, false, fmt.Errorf("open %s: %w", bus.LogBucket, err)
	}
	obj, err := store.Get(r.Context(), run+"/"+drv)
	if bus.IsNotFound(err) {
		return "", false, false, nil
	}
	if err != nil {
		return "", false, false, fmt.Errorf("get log: %w", err)
	}
	defer func() { _ = obj.Close() }()
	info, err := obj.Info()
	if err != nil {
		return "", false, false, fmt.Errorf("log info: %w", err)
	}
	skip := int64(info.Size) - shownLogBytes
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, obj, skip); err != nil {
			return "", false, false, fmt.Errorf("read log: %w", err)
		}
	}
	data, err := io.ReadAll(io.LimitReader(obj, shownLogBytes))
	if err != nil {
		return "", false, false, fmt.Errorf("read log: %w", err)
	}
	return strings.ToValidUTF8(string(data), "\uFFFD"), skip > 0, true, nil
}

// rawLog is the whole stored log as text, or what was streamed so far.
func (s *Service) rawLog(w http.ResponseWriter, r *http.Request, u user) {
	id, drv := r.PathValue("run"), r.PathValue("drv")
	if !bus.ValidRunID(id) || !drvBaseRe.MatchString(drv) {
		http.Error(w, "no such log", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if store, err := s.js.ObjectStore(r.Context(), bus.LogBucket); err == nil {
		if obj, err := store.Get(r.Context(), id+"/"+drv); err == nil {
			defer func() { _ = obj.Close() }()
			_, _ = io.Copy(w, obj)
			return
		}
	}
	live, ok, err := bus.ReadLiveLog(r.Context(), s.js, id, drv, 64<<20)
	if err != nil || !ok {
		http.Error(w, "no log (yet)", http.StatusNotFound)
		return
	}
	_, _ = w.Write(live.Data)
}

func (s *Service) login(w http.ResponseWriter, r *http.Request) {
	if !s.auth.enabled() {
		s.fail(w, r, user{}, http.StatusNotFound, "Login is not configured.")
		return
	}
	if err := s.auth.login(w, r); err != nil {
		s.logger.Warn("login", "err", err)
		s.fail(w, r, user{}, http.StatusServiceUnavailable, "The login provider did not answer; try again.")
	}
}

func (s *Service) callback(w http.ResponseWriter, r *http.Request) {
	if !s.auth.enabled() {
		s.fail(w, r, user{}, http.StatusNotFound, "Login is not configured.")
		return
	}
	u, next, err := s.auth.callback(w, r)
	if err != nil {
		s.logger.Warn("login callback", "err", err)
		s.fail(w, r, user{}, http.StatusForbidden, "Login failed; try again.")
		return
	}
	s.logger.Info("logged in", "user", u.Sub, "admin", u.Admin)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Service) logout(w http.ResponseWriter, r *http.Request) {
	u := s.auth.user(r)
	if u.LoggedIn() && !validCSRF(r, u) {
		s.fail(w, r, u, http.StatusForbidden, "This form is stale; reload the page and try again.")
		return
	}
	s.auth.setCookie(w, sessionCookie, "", "/", -1)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

var funcs = template.FuncMap{
	"ms": func(ms int64) string {
		if ms <= 0 {
			return ""
		}
		return (time.Duration(ms) * time.Millisecond).Round(100 * time.Millisecond).String()
	},
	"when": func(ms int64) string {
		if ms <= 0 {
			return ""
		}
		return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso":  func(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) },
	"path": url.PathEscape,
	"join": strings.Join,
}
