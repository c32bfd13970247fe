package cacheuploader

import (
	"errors"
	"flag"
	"strings"
	"time"
)

// Config is the cache-uploader's configuration.
type Config struct {
	// CacheURL is the binary cache outputs are copied to (file://...,
	// s3://..., ssh://...), as nix copy --to takes it.
	CacheURL string
	// SecretKeyFile signs the outputs (nix store sign --key-file).
	SecretKeyFile string
	// GenerateKey creates SecretKeyFile (and <SecretKeyFile>.pub) when it
	// does not exist.
	GenerateKey bool
	// KeyName names a generated key; clients list it in trusted-public-keys.
	KeyName string
	// Concurrency is how many uploads this process runs at once.
	Concurrency int
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
}

// RegisterFlags registers the cache-uploader's flags with prefix "cache-uploader.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.CacheURL, "cache-uploader.cache-url", "", "binary cache to copy built outputs to, e.g. file:///var/lib/nixbus/cache (required)")
	fs.StringVar(&c.SecretKeyFile, "cache-uploader.secret-key-file", "", "secret key signing the outputs (required)")
	fs.BoolVar(&c.GenerateKey, "cache-uploader.generate-key", false, "create the secret key file (and <file>.pub) when it does not exist")
	fs.StringVar(&c.KeyName, "cache-uploader.key-name", "nixbus-1", "name of a generated key")
	fs.IntVar(&c.Concurrency, "cache-uploader.concurrency", 2, "uploads run at once by this process")
	fs.StringVar(&c.StoreDir, "cache-uploader.store-dir", "/nix/store", "the Nix store; only paths in it are uploaded")
	fs.IntVar(&c.MaxAttempts, "cache-uploader.max-attempts", 5, "tries of one upload before it is reported as failed")
	fs.DurationVar(&c.AckWait, "cache-uploader.ack-wait", 30*time.Second, "time without a heartbeat before an upload is handed to another uploader")
	fs.DurationVar(&c.RetryDelay, "cache-uploader.retry-delay", 10*time.Second, "wait before a failed upload is tried again")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.CacheURL == "" {
		errs = append(errs, errors.New("cache-uploader.cache-url is required"))
	}
	if c.SecretKeyFile == "" {
		errs = append(errs, errors.New("cache-uploader.secret-key-file is required"))
	}
	if c.GenerateKey && (c.KeyName == "" || strings.ContainsAny(c.KeyName, ": \t\n")) {
		errs = append(errs, errors.New("cache-uploader.key-name must be a non-empty name without ':' or spaces"))
	}
	if c.Concurrency <= 0 || c.MaxAttempts <= 0 {
		errs = append(errs, errors.New("cache-uploader.concurrency and cache-uploader.max-attempts must be positive"))
	}
	if !strings.HasPrefix(c.StoreDir, "/") {
		errs = append(errs, errors.New("cache-uploader.store-dir must be absolute"))
	}
	if c.AckWait <= 0 || c.RetryDelay <= 0 {
		errs = append(errs, errors.New("cache-uploader.ack-wait and cache-uploader.retry-delay must be positive"))
	}
	return errors.Join(errs...)
}
