package gerrittest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"nixbus.dev/nixbus/pkg/gerrit"
)

// RESTReview is one request to the review endpoint, as received.
type RESTReview struct {
	// Path is the escaped request path, e.g.
	// /a/changes/my%2Fproject~42/revisions/3/review.
	Path string
	// Project and Change come from the decoded <project>~<change> id.
	Project  string
	Change   int64
	Revision string
	User     string
	Body     []byte
	Message  string
	Labels   map[string]int
	Tag      string
}

// REST is Gerrit's review endpoint (POST /a/changes/<id>/revisions/<rev>/review)
// with basic auth; every accepted request is recorded.
type REST struct {
	User, Password string

	mu      sync.Mutex
	reviews []RESTReview
	fail    int
	status  int
	lose    int
}

// NewREST returns a handler accepting user and password.
func NewREST(user, password string) *REST { return &REST{User: user, Password: password} }

// StartREST serves a REST handler on a loopback httptest server until the
// test ends, and returns a client configuration for it (the password in a
// file in t.TempDir()).
func StartREST(t testing.TB) (*REST, gerrit.HTTPConfig) {
	t.Helper()
	// A random password: a test can look for any part of it in logs.
	var b [24]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	r := NewREST("nixbus", base64.RawURLEncoding.EncodeToString(b[:]))
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte(r.Password+"\n"), 0o600); err != nil {
		t.Fatalf("write password: %v", err)
	}
	return r, gerrit.HTTPConfig{URL: srv.URL, User: r.User, PasswordFile: pw, Timeout: 5 * time.Second}
}

// Fail makes the next n requests answer status (500 if 0) without recording.
func (r *REST) Fail(n, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail, r.status = n, status
}

// LoseAnswers makes the next n reviews take effect and then drops the
// connection without an answer.
func (r *REST) LoseAnswers(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lose = n
}

// Reviews returns the accepted reviews in order.
func (r *REST) Reviews() []RESTReview {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RESTReview(nil), r.reviews...)
}

// WaitReviews waits until n reviews were accepted and returns them.
func (r *REST) WaitReviews(t testing.TB, n int) []RESTReview {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d REST reviews", n), func() bool { return len(r.Reviews()) >= n })
	return r.Reviews()
}

func (r *REST) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	user, pw, ok := req.BasicAuth()
	if !ok || user != r.User || pw != r.Password {
		w.Header().Set("WWW-Authenticate", `Basic realm="Gerrit Code Review"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	// /a/changes/<id>/revisions/<rev>/review, on the escaped path so that
	// a project's %2F stays inside the id.
	parts := strings.Split(strings.TrimPrefix(req.URL.EscapedPath(), "/"), "/")
	if len(parts) == 4 && parts[0] == "a" && parts[1] == "changes" && parts[3] == "messages" {
		r.messages(w, req, parts[2])
		return
	}
	if len(parts) != 6 || parts[0] != "a" || parts[1] != "changes" || parts[3] != "revisions" || parts[5] != "review" {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodPost {
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	id, err := url.PathUnescape(parts[2])
	if err != nil {
		http.Error(w, "bad change id", http.StatusBadRequest)
		return
	}
	project, num, ok := strings.Cut(id, "~")
	change, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil {
		http.Error(w, "Not Found: "+id, http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	var in struct {
		Message string         `json:"message"`
		Labels  map[string]int `json:"labels"`
		Tag     string         `json:"tag"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		http.Error(w, "Bad Request: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	if r.fail > 0 {
		r.fail--
		status := r.status
		r.mu.Unlock()
		if status == 0 {
			status = http.StatusInternalServerError
		}
		http.Error(w, "injected failure", status)
		return
	}
	r.reviews = append(r.reviews, RESTReview{
		Path: req.URL.EscapedPath(), Project: project, Change: change, Revision: parts[4], User: user,
		Body: body, Message: in.Message, Labels: in.Labels, Tag: in.Tag,
	})
	lose := r.lose > 0
	if lose {
		r.lose--
	}
	r.mu.Unlock()
	if lose {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
		}
		return
	}
	labels, _ := json.Marshal(in.Labels)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = fmt.Fprintf(w, ")]}'\n{\"labels\":%s,\"ready\":true}\n", labels)
}

// messages answers GET /a/changes/<id>/messages with the change's messages
// (ChangeMessageInfo), one per accepted review, worded as Gerrit words them.
func (r *REST) messages(w http.ResponseWriter, req *http.Request, escapedID string) {
	if req.Method != http.MethodGet {
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	id, err := url.PathUnescape(escapedID)
	project, num, ok := strings.Cut(id, "~")
	change, cerr := strconv.ParseInt(num, 10, 64)
	if err != nil || !ok || cerr != nil {
		http.Error(w, "Not Found: "+id, http.StatusNotFound)
		return
	}
	type messageInfo struct {
		ID       string `json:"id"`
		Tag      string `json:"tag,omitempty"`
		Message  string `json:"message"`
		Revision int    `json:"_revision_number,omitempty"`
	}
	out := []messageInfo{}
	for i, rv := range r.Reviews() {
		if rv.Project != project || rv.Change != change {
			continue
		}
		labels := map[string]string{}
		for k, v := range rv.Labels {
			labels[k] = strconv.Itoa(v)
		}
		ps, _ := strconv.Atoi(rv.Revision)
		out = append(out, messageInfo{ID: fmt.Sprintf("m%d", i), Tag: rv.Tag, Message: ChangeMessage(rv.Revision, labels, rv.Message), Revision: ps})
	}
	data, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = fmt.Fprintf(w, ")]}'\n%s\n", data)
}

// ChangeMessage is the change message Gerrit makes of a review: the
// patchset and votes on the first line, then the reviewer's message.
func ChangeMessage(patchset string, labels map[string]string, message string) string {
	var votes []string
	for l, v := range labels {
		if !strings.HasPrefix(v, "-") && v != "0" {
			v = "+" + v
		}
		votes = append(votes, l+v)
	}
	slices.Sort(votes)
	head := "Patch Set " + patchset + ":"
	if len(votes) > 0 {
		head += " " + strings.Join(votes, " ")
	}
	if message == "" {
		return head
	}
	return head + "\n\n" + message
}
