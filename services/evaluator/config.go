package evaluator

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/binarycache"
	"nixbus.dev/nixbus/pkg/flagx"
	"nixbus.dev/nixbus/pkg/storepath"
)

// Config is the evaluator's configuration.
type Config struct {
	// Systems are the systems this installation builds; jobs of other
	// systems are dropped (and counted). Default: the host's.
	Systems []string
	// NixEvalJobs is the nix-eval-jobs executable. Empty: looked up on PATH
	// at each evaluation; when absent, the built-in evaluator runs.
	NixEvalJobs string
	// Builtin forces the built-in evaluator even where nix-eval-jobs exists.
	Builtin bool
	// Workers is nix-eval-jobs' --workers. The built-in evaluator runs one
	// nix repl, as one `nix eval` would.
	Workers int
	// MaxMemoryMB is nix-eval-jobs' --max-memory-size, and the memory
	// limit of the built-in evaluator's nix processes (see nix.Start).
	MaxMemoryMB int
	// GCRootsDir holds GC roots of evaluated derivations (nix-eval-jobs'
	// --gc-roots-dir; the built-in evaluator links its derivations there
	// too, which makes them roots when the directory is under
	// /nix/var/nix/gcroots). Empty: a per-run directory for nix-eval-jobs,
	// no roots for the built-in evaluator.
	GCRootsDir string
	// WorkDir holds one directory per run (checkouts, scratch), removed
	// when the run's evaluation ends. Empty: nixbus-evaluator in the
	// system's temporary directory.
	WorkDir string
	// CacheURL is the binary cache whose contents count as cached (for
	// example file:///var/lib/nixbus/cache). Empty: the local store.
	CacheURL string
	// S3 is how to reach an s3:// CacheURL: credentials and TLS.
	S3 binarycache.S3Config
	// CacheConcurrency is how many paths are looked up at once in a
	// file://, http(s):// or s3:// cache.
	CacheConcurrency int
	// StoreDir is the Nix store: a job's derivation and outputs must be
	// paths directly inside it (anything else the flake hands over fails
	// the job), and only derivation files there are read.
	StoreDir string
	// PathInfoBatch is how many store paths one `nix path-info` checks.
	PathInfoBatch int
	// Concurrency is how many changes this process evaluates at once.
	Concurrency int
	// EvalTimeout bounds one evaluation; past it the run fails.
	EvalTimeout time.Duration
	// AckWait is how long an evaluation may go without a heartbeat before
	// another evaluator takes the change over.
	AckWait time.Duration
	// RetryDelay is the wait before a change whose handling failed (the
	// bus, not the flake) is tried again.
	RetryDelay time.Duration
	// PublishWindow bounds job messages awaiting their acknowledgement.
	PublishWindow int
	// PublishAckTimeout is how long one job's acknowledgement may take
	// before the job is published again (de-duplicated by its id).
	PublishAckTimeout time.Duration

	// graphChunkBytes bounds one graph chunk (bus.MaxGraphChunkBytes when
	// 0); tests lower it to see many chunks.
	graphChunkBytes int
}

// HostSystem is the Nix system name of this host, e.g. x86_64-linux.
func HostSystem() string {
	arch := map[string]string{
		"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64",
		"ppc64le": "powerpc64le", "arm": "armv7l", "loong64": "loongarch64", "s390x": "s390x",
	}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-" + runtime.GOOS
}

// DefaultConfig is the configuration the flags default to.
func DefaultConfig() Config {
	return Config{
		Systems:           []string{HostSystem()},
		Workers:           2,
		MaxMemoryMB:       4096,
		StoreDir:          storepath.DefaultDir,
		PathInfoBatch:     500,
		CacheConcurrency:  32,
		S3:                binarycache.S3Config{Timeout: binarycache.DefaultS3Timeout},
		Concurrency:       1,
		EvalTimeout:       time.Hour,
		AckWait:           30 * time.Second,
		RetryDelay:        5 * time.Second,
		PublishWindow:     512,
		PublishAckTimeout: 30 * time.Second,
	}
}

// RegisterFlags registers the evaluator's flags with prefix "evaluator.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	c.Systems = d.Systems
	fs.Func("evaluator.systems", "comma-separated systems to build; jobs of others are dropped (default "+HostSystem()+")",
		func(s string) error {
			c.Systems = flagx.Split(s)
			return nil
		})
	fs.StringVar(&c.NixEvalJobs, "evaluator.nix-eval-jobs", "", "nix-eval-jobs executable (default: from PATH; the built-in evaluator when absent)")
	fs.BoolVar(&c.Builtin, "evaluator.builtin", false, "use the built-in evaluator even where nix-eval-jobs is installed")
	fs.IntVar(&c.Workers, "evaluator.workers", d.Workers, "nix-eval-jobs --workers (the built-in evaluator runs one nix repl)")
	fs.IntVar(&c.MaxMemoryMB, "evaluator.max-memory-size", d.MaxMemoryMB, "memory limit of evaluation in MiB: nix-eval-jobs --max-memory-size; a cgroup v2 memory.max or an address-space rlimit of the built-in evaluator's nix")
	fs.StringVar(&c.GCRootsDir, "evaluator.gc-roots-dir", "", "directory for GC roots of evaluated derivations (default: per run, for nix-eval-jobs only)")
	fs.StringVar(&c.WorkDir, "evaluator.work-dir", "", "directory for per-run checkouts (default: nixbus-evaluator in the temporary directory)")
	fs.StringVar(&c.CacheURL, "evaluator.cache-url", "", "binary cache whose contents count as cached (default: the local store)")
	c.S3.RegisterFlags(fs, "evaluator.")
	fs.IntVar(&c.CacheConcurrency, "evaluator.cache-concurrency", d.CacheConcurrency, "paths looked up at once in a file://, http(s):// or s3:// cache")
	fs.StringVar(&c.StoreDir, "evaluator.store-dir", d.StoreDir, "the Nix store; jobs whose derivation or outputs are not paths in it fail")
	fs.IntVar(&c.PathInfoBatch, "evaluator.path-info-batch", d.PathInfoBatch, "store paths checked per nix path-info call")
	fs.IntVar(&c.Concurrency, "evaluator.concurrency", d.Concurrency, "changes this process evaluates at once")
	fs.DurationVar(&c.EvalTimeout, "evaluator.eval-timeout", d.EvalTimeout, "longest one evaluation may take")
	fs.DurationVar(&c.AckWait, "evaluator.ack-wait", d.AckWait, "silence after which another evaluator takes a change over")
	fs.DurationVar(&c.RetryDelay, "evaluator.retry-delay", d.RetryDelay, "wait before retrying a change after a bus error")
	fs.IntVar(&c.PublishWindow, "evaluator.publish-window", d.PublishWindow, "job messages awaiting acknowledgement at once")
	fs.DurationVar(&c.PublishAckTimeout, "evaluator.publish-ack-timeout", d.PublishAckTimeout, "wait for one job's acknowledgement before publishing it again")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Systems) == 0 {
		errs = append(errs, errors.New("evaluator.systems must name at least one system"))
	}
	for _, s := range c.Systems {
		if s == "" || strings.ContainsAny(s, " \t\n/") {
			errs = append(errs, fmt.Errorf("evaluator.systems: %q is not a system name", s))
		}
	}
	if c.Workers <= 0 || c.MaxMemoryMB <= 0 || c.PathInfoBatch <= 0 || c.Concurrency <= 0 || c.PublishWindow <= 0 {
		errs = append(errs, errors.New("evaluator.workers, max-memory-size, path-info-batch, concurrency and publish-window must be positive"))
	}
	if c.EvalTimeout <= 0 || c.AckWait <= 0 || c.RetryDelay <= 0 || c.PublishAckTimeout <= 0 {
		errs = append(errs, errors.New("evaluator.eval-timeout, ack-wait, retry-delay and publish-ack-timeout must be positive"))
	}
	if loc, err := binarycache.Parse(c.CacheURL); err != nil {
		errs = append(errs, fmt.Errorf("evaluator.cache-url: %w", err))
	} else if err := c.S3.Validate(loc); err != nil {
		errs = append(errs, fmt.Errorf("evaluator.%w", err))
	}
	if c.StoreDir != "" && !filepath.IsAbs(c.StoreDir) {
		errs = append(errs, fmt.Errorf("evaluator.store-dir %q must be absolute", c.StoreDir))
	}
	return errors.Join(errs...)
}

// storeDir is StoreDir or its default.
func (c *Config) storeDir() string {
	if c.StoreDir == "" {
		return storepath.DefaultDir
	}
	return c.StoreDir
}

// workDir is WorkDir or its default.
func (c *Config) workDir() string {
	if c.WorkDir == "" {
		return filepath.Join(os.TempDir(), "nixbus-evaluator")
	}
	return c.WorkDir
}
