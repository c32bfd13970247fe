package cacheuploader

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/binarycache"
	"nixbus.dev/nixbus/pkg/flagx"
	"nixbus.dev/nixbus/pkg/secret"
)

// Config is the cache-uploader's configuration.
type Config struct {
	// CacheURL is the binary cache outputs are copied to: an s3:// bucket
	// (s3://<bucket>?region=…&endpoint=…&scheme=…, as Nix writes it),
	// which nixbus uploads to itself, or any store nix copy --to takes
	// (file://..., ssh://...).
	CacheURL string
	// S3 is how to reach an s3:// cache: credentials and TLS.
	S3 binarycache.S3Config
	// S3Uploads is how many objects are uploaded to an s3:// cache at once.
	S3Uploads int
	// StagingDir holds the binary caches that uploads to an s3:// cache
	// are staged in, one per batch, removed after it.
	StagingDir string
	// SecretKeyFile signs the outputs: the secret-key of a file:// or
	// staging cache, else nix store sign --key-file.
	SecretKeyFile string
	// GenerateKey creates SecretKeyFile (and <SecretKeyFile>.pub) when it
	// does not exist.
	GenerateKey bool
	// KeyName names a generated key; clients list it in trusted-public-keys.
	KeyName string
	// Concurrency is how many build results this process takes at once;
	// their outputs are uploaded together, in batches.
	Concurrency int
	// BatchBuilds bounds the builds uploaded in one batch.
	BatchBuilds int
	// StoreDir is the Nix store; only paths inside it are uploaded.
	StoreDir string
	// MaxAttempts bounds the tries of one upload before it is reported
	// as failed.
	MaxAttempts int
	// AckWait is how long an upload may go without a heartbeat before
	// JetStream hands it to another uploader.
	AckWait time.Duration
	// RetryDelay is the wait before a failed upload is tried again.
	RetryDelay time.Duration

	// DefaultBranch is the branch whose post-merge builds get gc roots
	// and output links.
	DefaultBranch string
	// GCRootsDir holds a gc root per attribute and output of the latest
	// post-merge build of the default branch; empty turns gc roots off.
	GCRootsDir string
	// OutputsDir holds a symlink per attribute and output to the latest
	// post-merge build of the default branch; empty turns it off.
	OutputsDir string
	// RootsForManual treats manual runs of the default branch as
	// post-merge runs.
	RootsForManual bool

	// Builders, when set, are the builders (by --builder.name) whose
	// outputs are in this host's store: only their builds are uploaded,
	// by a consumer of their own. Empty: every build (one host, or one
	// shared store).
	Builders []string
}

// RegisterFlags registers the cache-uploader's flags with prefix "cache-uploader.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.CacheURL, "cache-uploader.cache-url", "", "binary cache to copy built outputs to, e.g. file:///var/lib/nixbus/cache (required)")
	secret.FlagVar(fs, &c.SecretKeyFile, "cache-uploader.secret-key-file", "cache-signing-key", "secret key signing the outputs (required)")
	fs.BoolVar(&c.GenerateKey, "cache-uploader.generate-key", false, "create the secret key file (and <file>.pub) when it does not exist")
	fs.StringVar(&c.KeyName, "cache-uploader.key-name", "nixbus-1", "name of a generated key")
	c.S3.RegisterFlags(fs, "cache-uploader.")
	fs.IntVar(&c.S3Uploads, "cache-uploader.s3-uploads", 8, "objects uploaded to an s3:// cache at once")
	fs.StringVar(&c.StagingDir, "cache-uploader.staging-dir", filepath.Join(os.TempDir(), "nixbus-cache-staging"), "directory where uploads to an s3:// cache are staged")
	fs.IntVar(&c.Concurrency, "cache-uploader.concurrency", 32, "build results taken at once by this process; their outputs are uploaded in batches")
	fs.IntVar(&c.BatchBuilds, "cache-uploader.batch-builds", 64, "most builds whose outputs are uploaded in one batch (one nix copy)")
	fs.StringVar(&c.StoreDir, "cache-uploader.store-dir", "/nix/store", "the Nix store; only paths in it are uploaded")
	fs.IntVar(&c.MaxAttempts, "cache-uploader.max-attempts", 5, "tries of one upload before it is reported as failed")
	fs.DurationVar(&c.AckWait, "cache-uploader.ack-wait", 30*time.Second, "time without a heartbeat before an upload is handed to another uploader")
	fs.DurationVar(&c.RetryDelay, "cache-uploader.retry-delay", 10*time.Second, "wait before a failed upload is tried again")
	fs.StringVar(&c.DefaultBranch, "cache-uploader.default-branch", "main", "branch whose post-merge builds get gc roots and output links")
	fs.StringVar(&c.GCRootsDir, "cache-uploader.gcroots-dir", "", "directory of gc roots <project>/<attr>[-<output>] for the default branch's post-merge builds (empty: off)")
	fs.StringVar(&c.OutputsDir, "cache-uploader.outputs-dir", "", "directory of symlinks <project>/<attr>[-<output>] to the default branch's latest post-merge outputs (empty: off)")
	fs.BoolVar(&c.RootsForManual, "cache-uploader.roots-for-manual", false, "give manual runs of the default branch gc roots and output links too")
	fs.Func("cache-uploader.builders", "comma-separated names of the builders whose outputs are in this host's store; only their builds are uploaded here (default: all builds)", func(v string) error {
		c.Builders = flagx.Split(v)
		return nil
	})
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.CacheURL == "" {
		errs = append(errs, errors.New("cache-uploader.cache-url is required"))
	} else if loc, err := binarycache.Parse(c.CacheURL); err != nil {
		errs = append(errs, fmt.Errorf("cache-uploader.cache-url: %w", err))
	} else if loc.Kind == binarycache.KindHTTP {
		errs = append(errs, errors.New("cache-uploader.cache-url: an http(s):// cache is read-only; upload to its s3:// bucket or its directory"))
	} else if err := c.S3.Validate(loc); err != nil {
		errs = append(errs, fmt.Errorf("cache-uploader.%w", err))
	} else if loc.Kind == binarycache.KindS3 && (c.S3Uploads <= 0 || !filepath.IsAbs(c.StagingDir)) {
		errs = append(errs, errors.New("cache-uploader.s3-uploads must be positive and cache-uploader.staging-dir absolute"))
	}
	if c.SecretKeyFile == "" {
		errs = append(errs, errors.New("cache-uploader.secret-key-file is required"))
	}
	if c.GenerateKey && (c.KeyName == "" || strings.ContainsAny(c.KeyName, ": \t\n")) {
		errs = append(errs, errors.New("cache-uploader.key-name must be a non-empty name without ':' or spaces"))
	}
	if c.Concurrency <= 0 || c.MaxAttempts <= 0 || c.BatchBuilds <= 0 {
		errs = append(errs, errors.New("cache-uploader.concurrency, cache-uploader.batch-builds and cache-uploader.max-attempts must be positive"))
	}
	if !strings.HasPrefix(c.StoreDir, "/") {
		errs = append(errs, errors.New("cache-uploader.store-dir must be absolute"))
	}
	if c.AckWait <= 0 || c.RetryDelay <= 0 {
		errs = append(errs, errors.New("cache-uploader.ack-wait and cache-uploader.retry-delay must be positive"))
	}
	for _, d := range []struct{ flag, dir string }{{"gcroots-dir", c.GCRootsDir}, {"outputs-dir", c.OutputsDir}} {
		if d.dir != "" && !filepath.IsAbs(d.dir) {
			errs = append(errs, fmt.Errorf("cache-uploader.%s must be absolute", d.flag))
		}
	}
	if c.GCRootsDir != "" && filepath.Clean(c.GCRootsDir) == filepath.Clean(c.OutputsDir) {
		errs = append(errs, errors.New("cache-uploader.gcroots-dir and cache-uploader.outputs-dir must differ"))
	}
	if c.linksOn() && strings.TrimPrefix(c.DefaultBranch, "refs/heads/") == "" {
		errs = append(errs, errors.New("cache-uploader.default-branch is required with gcroots-dir or outputs-dir"))
	}
	return errors.Join(errs...)
}

// linksOn reports whether post-merge builds get gc roots or output links.
func (c *Config) linksOn() bool { return c.GCRootsDir != "" || c.OutputsDir != "" }
