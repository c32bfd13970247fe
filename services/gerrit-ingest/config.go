package gerritingest

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/flagx"
	"nixbus.dev/nixbus/pkg/gerrit"
)

// Config is gerrit-ingest's configuration. The SSH connection itself is in
// Deps.SSH: the evaluator and the reporter share it.
type Config struct {
	// Projects to watch; empty watches every project the account sees.
	Projects []string
	// Branches whose updates (change-merged, ref-updated) start post-merge
	// runs; nil means main and master, empty means none.
	Branches []string
	// SkipKinds are patchset kinds that start no run; nil means
	// NO_CHANGE and NO_CODE_CHANGE (a new commit message, a no-op rebase),
	// empty means none.
	SkipKinds []string
	// RecheckCommand is the comment that re-runs a patchset ("recheck").
	RecheckCommand string
	// FetchURL is the base URL of the git repositories in change events
	// (e.g. https://review.example.com/a); empty: ssh://user@host:port.
	FetchURL string
	// ReconnectMin and ReconnectMax bound the backoff between connections.
	ReconnectMin, ReconnectMax time.Duration
	// MaxLineBytes bounds one event line; longer lines are dropped as
	// malformed.
	MaxLineBytes int
}

// Defaults for nil or zero fields.
var (
	DefaultBranches  = []string{"main", "master"}
	DefaultSkipKinds = []string{"NO_CHANGE", "NO_CODE_CHANGE"}
)

const (
	defaultRecheck      = "recheck"
	defaultReconnectMin = time.Second
	defaultReconnectMax = time.Minute
	defaultMaxLineBytes = 4 << 20
)

// RegisterFlags registers the flags with prefix "gerrit-ingest.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var(&listFlag{p: &c.Projects}, "gerrit-ingest.projects", "comma-separated Gerrit projects to watch (default: all)")
	fs.Var(&listFlag{p: &c.Branches, def: DefaultBranches}, "gerrit-ingest.branches", "comma-separated branches whose updates start post-merge runs (empty: none)")
	fs.Var(&listFlag{p: &c.SkipKinds, def: DefaultSkipKinds}, "gerrit-ingest.skip-kinds", "comma-separated patchset kinds that start no run (empty: none)")
	fs.StringVar(&c.RecheckCommand, "gerrit-ingest.recheck-command", defaultRecheck, "review comment that re-runs a patchset")
	fs.StringVar(&c.FetchURL, "gerrit-ingest.fetch-url", "", "base URL the evaluator fetches projects from (default: the Gerrit SSH address)")
	fs.DurationVar(&c.ReconnectMin, "gerrit-ingest.reconnect-min", defaultReconnectMin, "first wait before reconnecting to Gerrit")
	fs.DurationVar(&c.ReconnectMax, "gerrit-ingest.reconnect-max", defaultReconnectMax, "longest wait before reconnecting to Gerrit")
	fs.IntVar(&c.MaxLineBytes, "gerrit-ingest.max-line-bytes", defaultMaxLineBytes, "longest stream-events line accepted")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.ReconnectMin < 0 || c.ReconnectMax < 0 || c.MaxLineBytes < 0 {
		return errors.New("gerrit-ingest: reconnect bounds and max line bytes must not be negative")
	}
	if c.ReconnectMin > 0 && c.ReconnectMax > 0 && c.ReconnectMin > c.ReconnectMax {
		return errors.New("gerrit-ingest.reconnect-min is above gerrit-ingest.reconnect-max")
	}
	for _, b := range c.Branches {
		if !gerrit.ValidBranch(strings.TrimPrefix(b, "refs/heads/")) {
			return fmt.Errorf("gerrit-ingest.branches: %q is not a branch name", b)
		}
	}
	if strings.ContainsAny(c.RecheckCommand, "\r\n") {
		return errors.New("gerrit-ingest.recheck-command must be one line")
	}
	if c.FetchURL != "" {
		u, err := url.Parse(c.FetchURL)
		if err != nil || u.Host == "" || (u.Scheme != "ssh" && u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("gerrit-ingest.fetch-url %q: want ssh://, https:// or http:// with a host", c.FetchURL)
		}
		if _, ok := u.User.Password(); ok {
			return errors.New("gerrit-ingest.fetch-url must not hold a password: it is copied into every change event")
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Branches == nil {
		c.Branches = DefaultBranches
	}
	if c.SkipKinds == nil {
		c.SkipKinds = DefaultSkipKinds
	}
	if c.RecheckCommand == "" {
		c.RecheckCommand = defaultRecheck
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = defaultReconnectMin
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = max(defaultReconnectMax, c.ReconnectMin)
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = defaultMaxLineBytes
	}
	return c
}

// listFlag is a comma-separated list; the first Set replaces the default,
// and an empty value sets an empty (not nil) list.
type listFlag struct {
	p   *[]string
	def []string
	set bool
}

func (l *listFlag) String() string {
	if l.p == nil {
		return ""
	}
	if *l.p == nil {
		return strings.Join(l.def, ",")
	}
	return strings.Join(*l.p, ",")
}

func (l *listFlag) Set(v string) error {
	if !l.set {
		*l.p = []string{}
		l.set = true
	}
	*l.p = append(*l.p, flagx.Split(v)...)
	return nil
}
