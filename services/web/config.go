package web

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/flagx"
)

// Config is the web page's configuration.
type Config struct {
	// BaseURL is where the pages are reached from a browser, e.g.
	// https://ci.example.org; the OIDC redirect URL is <BaseURL>/auth/callback.
	BaseURL string
	// PublicRead lets anyone read the pages; otherwise reading needs a login.
	PublicRead bool
	// Issuer is the OIDC provider's issuer URL; empty: no login, no actions.
	Issuer string
	// ClientID and ClientSecretFile are this client's credentials at the
	// provider; the secret is read from a file, never argv.
	ClientID         string
	ClientSecretFile string
	// Admins may restart and cancel: OIDC subjects, e-mail addresses or
	// preferred user names.
	Admins []string
	// AdminGroup, when set, makes members of this group admins too: the
	// group is looked for in the ID token's GroupsClaim.
	AdminGroup  string
	GroupsClaim string
	// SessionKeyFile holds the key that signs session cookies (32 bytes or
	// more); empty: a random key per process (everyone logs in again after
	// a restart).
	SessionKeyFile string
	// SessionTTL is how long a login lasts.
	SessionTTL time.Duration
	// MaxRuns bounds the runs the runs page knows (the newest are kept).
	MaxRuns int
	// PageSize is the rows of one page of runs or jobs.
	PageSize int
	// RunCache is how many runs' job tables are kept in memory.
	RunCache int
	// MaxLiveClients bounds the live logs followed at once.
	MaxLiveClients int
	// Heartbeat is how often an idle live log is sent a keep-alive.
	Heartbeat time.Duration
}

// RegisterFlags registers the web page's flags with prefix "web.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.BaseURL, "web.base-url", "http://localhost:9464", "URL the web pages are reached at (for OIDC redirects)")
	fs.BoolVar(&c.PublicRead, "web.public-read", true, "anyone may read the pages; false: reading needs a login")
	fs.StringVar(&c.Issuer, "web.oidc-issuer", "", "OpenID Connect issuer URL (empty: no login, no restart/cancel buttons)")
	fs.StringVar(&c.ClientID, "web.oidc-client-id", "nixbus", "OpenID Connect client id")
	fs.StringVar(&c.ClientSecretFile, "web.oidc-client-secret-file", "", "file holding the OpenID Connect client secret")
	fs.Func("web.admins", "comma-separated OIDC subjects, e-mails or user names who may restart and cancel (repeatable)", func(v string) error {
		c.Admins = append(c.Admins, flagx.Split(v)...)
		return nil
	})
	fs.StringVar(&c.AdminGroup, "web.admin-group", "", "members of this group (in the groups claim) are admins too")
	fs.StringVar(&c.GroupsClaim, "web.groups-claim", "groups", "ID token claim listing the user's groups")
	fs.StringVar(&c.SessionKeyFile, "web.session-key-file", "", "file holding the key signing session cookies (empty: random per process)")
	fs.DurationVar(&c.SessionTTL, "web.session-ttl", 12*time.Hour, "how long a login lasts")
	fs.IntVar(&c.MaxRuns, "web.max-runs", 10000, "runs the runs page keeps in memory (the newest)")
	fs.IntVar(&c.PageSize, "web.page-size", 100, "rows of one page of runs or jobs")
	fs.IntVar(&c.RunCache, "web.run-cache", 4, "runs whose job tables are kept in memory")
	fs.IntVar(&c.MaxLiveClients, "web.max-live-clients", 256, "live logs followed at once")
	fs.DurationVar(&c.Heartbeat, "web.heartbeat", 15*time.Second, "keep-alive interval of live logs")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("web.base-url %q must be an http(s) URL", c.BaseURL))
	}
	if c.Issuer != "" {
		if u, err := url.Parse(c.Issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("web.oidc-issuer %q must be an http(s) URL", c.Issuer))
		}
		if c.ClientID == "" {
			errs = append(errs, errors.New("web.oidc-client-id is required with web.oidc-issuer"))
		}
	}
	if !c.PublicRead && c.Issuer == "" {
		errs = append(errs, errors.New("web.public-read=false needs web.oidc-issuer"))
	}
	if c.SessionTTL <= 0 || c.Heartbeat <= 0 {
		errs = append(errs, errors.New("web.session-ttl and web.heartbeat must be positive"))
	}
	if c.MaxRuns <= 0 || c.PageSize <= 0 || c.RunCache <= 0 || c.MaxLiveClients <= 0 {
		errs = append(errs, errors.New("web.max-runs, web.page-size, web.run-cache and web.max-live-clients must be positive"))
	}
	return errors.Join(errs...)
}

func (c *Config) secure() bool { return strings.HasPrefix(c.BaseURL, "https://") }
