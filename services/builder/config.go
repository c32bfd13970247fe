package builder

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"
)

// Config is the builder's configuration.
type Config struct {
	// System is the Nix system this builder builds for (x86_64-linux...).
	// Every builder of a system shares one durable consumer.
	System string
	// Name identifies this builder in results; the host name when empty.
	Name string
	// Concurrency is how many builds this process runs at once.
	Concurrency int
	// WorkDir holds per-run out-links (GC roots of the outputs until they
	// are uploaded) and logs being written; <tmp>/nixbus-builder if empty.
	WorkDir string
	// StoreDir is the Nix store; only derivations inside it are built.
	StoreDir string
	// Timeout bounds one build.
	Timeout time.Duration
	// MaxSilentTime is nix's --max-silent-time: a builder printing nothing
	// for this long is killed.
	MaxSilentTime time.Duration
	// RemoteOnly sets max-jobs to 0 so that nix hands every build to its
	// remote builders (a builder fronting a build farm).
	RemoteOnly bool
	// NixCLI builds with one `nix build` process per build instead of
	// over long-lived nix-daemon connections.
	NixCLI bool
	// KillGrace is how long nix gets to stop after SIGTERM before SIGKILL.
	KillGrace time.Duration
	// MaxLogBytes caps a stored log; longer logs keep their head and tail.
	MaxLogBytes int64
	// OutLinkTTL is how long a run's out-links are kept; 0 keeps them.
	OutLinkTTL time.Duration
	// PruneInterval is how often old out-links are removed.
	PruneInterval time.Duration
	// AckWait is how long a build may go without a heartbeat before
	// JetStream hands it to another builder.
	AckWait time.Duration
	// RetryDelay is the wait before a request whose handling failed (or
	// was interrupted by shutdown) is delivered again.
	RetryDelay time.Duration
	// LiveLogBytes caps the log a build streams to the bus while it runs
	// (nixbus.log.<run>.<drv>); 0 streams none. The stored log is capped
	// by MaxLogBytes on its own.
	LiveLogBytes int64
	// LiveLogInterval is how often new log output is streamed.
	LiveLogInterval time.Duration
	// MaxRetries is how many times a build that failed for a transient
	// infrastructure reason (see nixbuild.TransientReason) is tried again;
	// a build's own failure never is.
	MaxRetries int
	// RetryBackoff is the wait before the first retry; it doubles after.
	RetryBackoff time.Duration
	// HeartbeatInterval is how often the builder announces itself on
	// nixbus.builder.<system>; the planner fails a system's jobs when no
	// builder of it is heard for --planner.no-builder-timeout.
	HeartbeatInterval time.Duration
	// LogBaseURL is where build logs are served (as the reporter's
	// --reporter.log-base-url): a build's span carries its log's URL,
	// <LogBaseURL>/<run>/<drv basename>, as nixbus.log_url. Empty: the
	// process's --reporter.log-base-url.
	LogBaseURL string
	// Instant reports success without running nix. For benchmarks only.
	Instant bool
}

// RegisterFlags registers the builder's flags with prefix "builder.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.System, "builder.system", "", "Nix system to build for, e.g. x86_64-linux (required)")
	fs.StringVar(&c.Name, "builder.name", "", "name of this builder in results (default: host name)")
	fs.IntVar(&c.Concurrency, "builder.concurrency", 1, "builds run at once by this process")
	fs.StringVar(&c.WorkDir, "builder.work-dir", "", "directory for out-links and logs being written (default: <tmp>/nixbus-builder)")
	fs.StringVar(&c.StoreDir, "builder.store-dir", "/nix/store", "the Nix store; only derivations in it are built")
	fs.DurationVar(&c.Timeout, "builder.timeout", 3*time.Hour, "time limit of one build")
	fs.DurationVar(&c.MaxSilentTime, "builder.max-silent-time", 1200*time.Second, "kill a build that prints nothing for this long (nix --max-silent-time)")
	fs.BoolVar(&c.RemoteOnly, "builder.remote-only", false, "build nothing locally (max-jobs 0): hand every build to Nix remote builders")
	fs.BoolVar(&c.NixCLI, "builder.nix-cli", false, "run one `nix build` process per build instead of building over long-lived `nix-daemon --stdio` connections (slower: ~0.15 s a build)")
	fs.DurationVar(&c.KillGrace, "builder.kill-grace", 10*time.Second, "time nix gets to stop its builders after SIGTERM")
	fs.Int64Var(&c.MaxLogBytes, "builder.max-log-bytes", 64<<20, "largest log stored; longer logs keep their head and tail")
	fs.DurationVar(&c.OutLinkTTL, "builder.out-link-ttl", 24*time.Hour, "how long out-links (GC roots of built outputs) are kept; 0 keeps them")
	fs.DurationVar(&c.PruneInterval, "builder.prune-interval", time.Hour, "how often expired out-links are removed")
	fs.DurationVar(&c.AckWait, "builder.ack-wait", 30*time.Second, "time without a heartbeat before a build is handed to another builder")
	fs.DurationVar(&c.RetryDelay, "builder.retry-delay", 5*time.Second, "wait before an interrupted or failed request is delivered again")
	fs.Int64Var(&c.LiveLogBytes, "builder.live-log-bytes", 8<<20, "most log bytes one build streams live to the bus (0: no live log)")
	fs.DurationVar(&c.LiveLogInterval, "builder.live-log-interval", time.Second, "how often new log output of a running build is streamed")
	fs.IntVar(&c.MaxRetries, "builder.max-retries", 2, "times a build failing for a transient infrastructure reason (builder killed, store full, remote builder unreachable, download error) is tried again")
	fs.DurationVar(&c.RetryBackoff, "builder.retry-backoff", 10*time.Second, "wait before the first retry of a transient failure; doubles for each next one")
	fs.DurationVar(&c.HeartbeatInterval, "builder.heartbeat-interval", 30*time.Second, "how often this builder announces itself to the planner (keep well below --planner.no-builder-timeout)")
	fs.StringVar(&c.LogBaseURL, "builder.log-base-url", "", "base URL of build logs, put on build spans as nixbus.log_url (default: --reporter.log-base-url)")
	fs.BoolVar(&c.Instant, "builder.instant", false, "report every build as succeeded without running nix (benchmarks only)")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.System == "" {
		errs = append(errs, errors.New("builder.system is required"))
	}
	if c.Concurrency <= 0 {
		errs = append(errs, errors.New("builder.concurrency must be positive"))
	}
	if !filepath.IsAbs(c.StoreDir) {
		errs = append(errs, fmt.Errorf("builder.store-dir %q must be absolute", c.StoreDir))
	}
	if c.Timeout <= 0 || c.AckWait <= 0 || c.RetryDelay <= 0 || c.PruneInterval <= 0 || c.HeartbeatInterval <= 0 {
		errs = append(errs, errors.New("builder.timeout, builder.ack-wait, builder.retry-delay, builder.prune-interval and builder.heartbeat-interval must be positive"))
	}
	if c.MaxRetries < 0 || c.MaxRetries > 10 || c.RetryBackoff <= 0 {
		errs = append(errs, errors.New("builder.max-retries must be in 0..10 and builder.retry-backoff positive"))
	}
	if c.MaxSilentTime < time.Second {
		errs = append(errs, errors.New("builder.max-silent-time must be at least 1s"))
	}
	if c.KillGrace <= 0 {
		errs = append(errs, errors.New("builder.kill-grace must be positive"))
	}
	if c.OutLinkTTL < 0 {
		errs = append(errs, errors.New("builder.out-link-ttl must not be negative"))
	}
	if c.MaxLogBytes < 1024 {
		errs = append(errs, errors.New("builder.max-log-bytes must be at least 1024"))
	}
	if c.LiveLogBytes < 0 || c.LiveLogBytes > 0 && c.LiveLogInterval <= 0 {
		errs = append(errs, errors.New("builder.live-log-bytes must not be negative and builder.live-log-interval must be positive"))
	}
	return errors.Join(errs...)
}
