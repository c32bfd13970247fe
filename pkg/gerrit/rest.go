package gerrit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/retry"
	"nixbus.dev/nixbus/pkg/secret"
)

// HTTPConfig says how to reach Gerrit's REST API and HTTPS git.
type HTTPConfig struct {
	// URL is Gerrit's web root, e.g. https://review.example.com (with its
	// path prefix, if any).
	URL string
	// User and the HTTP password in PasswordFile authenticate (basic auth).
	User         string
	PasswordFile string
	// Timeout bounds one request.
	Timeout time.Duration
}

// RegisterFlags registers the fields as <prefix>url, <prefix>user, ...
// (for example prefix "gerrit.http.").
func (c *HTTPConfig) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.URL, prefix+"url", "", "Gerrit web root for REST and HTTPS git, e.g. https://review.example.com")
	fs.StringVar(&c.User, prefix+"user", "", "Gerrit account for REST and HTTPS git")
	secret.FlagVar(fs, &c.PasswordFile, prefix+"password-file", "gerrit-http-password", "file holding the account's Gerrit HTTP password")
	fs.DurationVar(&c.Timeout, prefix+"timeout", 30*time.Second, "bound on one REST request")
}

// Enabled reports whether a REST endpoint is configured.
func (c HTTPConfig) Enabled() bool { return c.URL != "" }

// Validate checks a configured endpoint; a disabled one is valid.
func (c HTTPConfig) Validate() error {
	if !c.Enabled() {
		return nil
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return fmt.Errorf("gerrit http url %q: want http(s)://host[/prefix] without credentials", c.URL)
	}
	if (c.User == "") != (c.PasswordFile == "") {
		return errors.New("gerrit http: user and password file go together")
	}
	if c.Timeout < 0 {
		return errors.New("gerrit http: timeout must not be negative")
	}
	return nil
}

// Password reads the HTTP password (without a trailing newline).
func (c HTTPConfig) Password() (string, error) {
	if c.PasswordFile == "" {
		return "", nil
	}
	pw, err := secret.ReadString(c.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("read gerrit http password: %w", err)
	}
	return pw, nil
}

// RESTReviewer posts reviews to POST /a/changes/<project>~<change>/revisions/<rev>/review.
type RESTReviewer struct {
	cfg    HTTPConfig
	client *http.Client
	retry  Retry
}

// NewRESTReviewer checks cfg; client nil means http.DefaultClient.
func NewRESTReviewer(cfg HTTPConfig, client *http.Client, retry Retry) (*RESTReviewer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("gerrit rest reviewer: no url configured")
	}
	if client == nil {
		client = http.DefaultClient
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &RESTReviewer{cfg: cfg, client: client, retry: retry}, nil
}

// reviewInput is Gerrit's ReviewInput entity, the part nixbus sets.
type reviewInput struct {
	Message string         `json:"message,omitempty"`
	Labels  map[string]int `json:"labels,omitempty"`
	Tag     string         `json:"tag,omitempty"`
}

// ReviewURL is where r is posted under Gerrit's web root base.
func ReviewURL(base string, r Review) string {
	id := url.PathEscape(r.Project + "~" + strconv.FormatInt(r.Change, 10))
	rev := r.Revision
	if rev == "" {
		rev = strconv.Itoa(int(r.Patchset))
	}
	return strings.TrimRight(base, "/") + "/a/changes/" + id + "/revisions/" + rev + "/review"
}

// MessagesURL lists the messages of r's change under Gerrit's web root base.
func MessagesURL(base string, r Review) string {
	id := url.PathEscape(r.Project + "~" + strconv.FormatInt(r.Change, 10))
	return strings.TrimRight(base, "/") + "/a/changes/" + id + "/messages"
}

// Review posts r, retrying failures other than refusals (4xx). A post whose
// answer was lost may have been applied: with a Marker, the change's
// messages are searched for it before the next attempt.
func (s *RESTReviewer) Review(ctx context.Context, r Review) error {
	if err := r.validate(); err != nil {
		return err
	}
	in := reviewInput{Message: r.message(), Tag: r.tag()}
	if !r.NoVote {
		in.Labels = map[string]int{"Verified": r.Verified}
	}
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode review: %w", err)
	}
	password, err := s.cfg.Password()
	if err != nil {
		return err
	}
	target := ReviewURL(s.cfg.URL, r)
	look := r.MaybePosted
	err = s.retry.do(ctx, func(ctx context.Context) error {
		if look {
			found, err := s.hasReview(ctx, r, password)
			if err != nil || found {
				return err
			}
		}
		err := s.post(ctx, target, body, password)
		look = err != nil && r.Marker != "" && !IsPermanent(err)
		return err
	})
	if err != nil {
		return fmt.Errorf("review %d,%s over rest: %w", r.Change, psOrRev(r), err)
	}
	return nil
}

// hasReview searches r's change messages for r.Marker.
func (s *RESTReviewer) hasReview(ctx context.Context, r Review, password string) (bool, error) {
	data, err := s.do(ctx, http.MethodGet, MessagesURL(s.cfg.URL, r), nil, password)
	if err != nil {
		return false, fmt.Errorf("look for an earlier review: %w", err)
	}
	var msgs []struct {
		Message string `json:"message"`
		Tag     string `json:"tag"`
	}
	if err := json.Unmarshal(data, &msgs); err != nil {
		return false, fmt.Errorf("look for an earlier review: decode messages: %w", err)
	}
	for _, m := range msgs {
		if m.Tag == r.tag() && hasMarker(m.Message, r.Marker) {
			return true, nil
		}
	}
	return false, nil
}

func (s *RESTReviewer) post(ctx context.Context, target string, body []byte, password string) error {
	data, err := s.do(ctx, http.MethodPost, target, body, password)
	if err != nil {
		return fmt.Errorf("post review: %w", err)
	}
	var res struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return fmt.Errorf("decode review answer: %w", err)
	}
	if res.Error != "" {
		return retry.Permanent(fmt.Errorf("gerrit refused the review: %s", res.Error))
	}
	return nil
}

// do sends one request and returns the answer's JSON (without the XSSI
// prefix). A 4xx answer other than 408 and 429 is a permanent error.
func (s *RESTReviewer) do(ctx context.Context, method, target string, body []byte, password string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, retry.Permanent(fmt.Errorf("build request: %w", err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	}
	req.Header.Set("Accept", "application/json")
	if s.cfg.User != "" {
		req.SetBasicAuth(s.cfg.User, password)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	data, rerr := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if cerr := resp.Body.Close(); cerr != nil && rerr == nil {
		rerr = cerr
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(StripXSSI(data))))
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout &&
			resp.StatusCode != http.StatusTooManyRequests {
			return nil, retry.Permanent(err)
		}
		return nil, err
	}
	if rerr != nil {
		return nil, fmt.Errorf("read answer: %w", rerr)
	}
	return StripXSSI(data), nil
}

// StripXSSI removes the )]}' line Gerrit puts before JSON answers.
func StripXSSI(b []byte) []byte {
	if rest, ok := bytes.CutPrefix(b, []byte(")]}'")); ok {
		return bytes.TrimLeft(rest, "\r\n")
	}
	return b
}
