package planner

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/flagx"
)

// Config is the planner's configuration.
type Config struct {
	// CheckpointInterval is how often run deadlines are checked and the
	// replay checkpoint (the lowest stream sequence of any unfinished run)
	// is saved. A restart replays from the last one saved; replays publish nothing twice, so this only
	// bounds how much is read again.
	CheckpointInterval time.Duration
	// PublishWindow bounds messages published but not yet acknowledged.
	PublishWindow int
	// PublishAckTimeout is how long one acknowledgement may take before
	// the message is published again (same message id, so never twice).
	PublishAckTimeout time.Duration
	// VerdictFailedCap bounds the failed jobs listed in one verdict (the
	// counts stay exact), keeping it far below the bus's 1 MiB limit.
	VerdictFailedCap int
	// RunTimeout is the run deadline: a run still unfinished this long
	// after it started has its unfinished jobs failed and gets its verdict.
	// A restart never replays further back than this.
	RunTimeout time.Duration
	// NoBuilderTimeout fails a system's unfinished jobs once no builder of
	// that system has announced itself for this long.
	NoBuilderTimeout time.Duration
	// Systems are the systems this installation builds: their builders
	// and queues are reported (as 0 until there is something to count)
	// from the start, besides any other system heard from or released to.
	Systems []string
	// FailedCacheTTL is how long a derivation whose build failed by its
	// own fault is not built again (the failed-build cache); 0 disables it.
	FailedCacheTTL time.Duration
}

// DefaultConfig is what RegisterFlags defaults to.
func DefaultConfig() Config {
	return Config{
		CheckpointInterval: time.Second,
		PublishWindow:      4096,
		PublishAckTimeout:  10 * time.Second,
		VerdictFailedCap:   1000,
		RunTimeout:         12 * time.Hour,
		NoBuilderTimeout:   15 * time.Minute,
		FailedCacheTTL:     7 * 24 * time.Hour,
	}
}

// RegisterFlags registers the planner's flags with prefix "planner.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.DurationVar(&c.CheckpointInterval, "planner.checkpoint-interval", d.CheckpointInterval, "how often to save the replay checkpoint")
	fs.IntVar(&c.PublishWindow, "planner.publish-window", d.PublishWindow, "messages published and awaiting acknowledgement at once")
	fs.DurationVar(&c.PublishAckTimeout, "planner.publish-ack-timeout", d.PublishAckTimeout, "wait for one acknowledgement before publishing again")
	fs.IntVar(&c.VerdictFailedCap, "planner.verdict-failed-cap", d.VerdictFailedCap, "failed jobs listed in one run verdict; the rest are counted")
	fs.DurationVar(&c.RunTimeout, "planner.run-timeout", d.RunTimeout, "fail the unfinished jobs of a run this long after it started; restarts replay no further back")
	fs.DurationVar(&c.FailedCacheTTL, "planner.failed-cache-ttl", d.FailedCacheTTL, "do not build again, for this long, a derivation whose build failed by its own fault (its jobs fail linking the first failure's log); 0 disables")
	fs.DurationVar(&c.NoBuilderTimeout, "planner.no-builder-timeout", d.NoBuilderTimeout, "fail a system's unfinished jobs when no builder of it has been seen for this long")
	fs.Func("planner.systems", "comma-separated systems whose builders and queues are reported from the start (default: --evaluator.systems)", func(s string) error {
		c.Systems = flagx.Split(s)
		return nil
	})
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.CheckpointInterval <= 0 || c.PublishAckTimeout <= 0 {
		return errors.New("planner.checkpoint-interval and planner.publish-ack-timeout must be positive")
	}
	if c.RunTimeout <= 0 || c.NoBuilderTimeout <= 0 {
		return errors.New("planner.run-timeout and planner.no-builder-timeout must be positive")
	}
	if c.FailedCacheTTL < 0 {
		return errors.New("planner.failed-cache-ttl must not be negative")
	}
	if c.PublishWindow <= 0 {
		return errors.New("planner.publish-window must be positive")
	}
	if len(c.Systems) > maxSystems {
		return fmt.Errorf("planner.systems: at most %d", maxSystems)
	}
	for _, s := range c.Systems {
		if s == "" || len(s) > maxSystemBytes || strings.ContainsAny(s, " \t\n/") {
			return fmt.Errorf("planner.systems: %q is not a system name", s)
		}
	}
	if c.VerdictFailedCap <= 0 || c.VerdictFailedCap > 5000 {
		return errors.New("planner.verdict-failed-cap must be in 1..5000")
	}
	return nil
}
