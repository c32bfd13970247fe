package evaluator

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConfigFlags(t *testing.T) {
	var cfg Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	require.NoError(t, cfg.Validate())
	require.Equal(t, DefaultConfig(), cfg)
	require.Equal(t, []string{HostSystem()}, cfg.Systems)

	require.NoError(t, fs.Parse([]string{
		"--evaluator.systems", "x86_64-linux, aarch64-linux,",
		"--evaluator.cache-url", "file:///var/cache/nixbus",
		"--evaluator.eval-timeout", "5m",
		"--evaluator.builtin",
	}))
	require.NoError(t, cfg.Validate())
	require.Equal(t, []string{"x86_64-linux", "aarch64-linux"}, cfg.Systems)
	require.Equal(t, "file:///var/cache/nixbus", cfg.CacheURL)
	require.Equal(t, 5*time.Minute, cfg.EvalTimeout)
	require.True(t, cfg.Builtin)
}

func TestConfigValidate(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no systems":      func(c *Config) { c.Systems = nil },
		"odd system":      func(c *Config) { c.Systems = []string{"x86_64 linux"} },
		"no workers":      func(c *Config) { c.Workers = 0 },
		"no window":       func(c *Config) { c.PublishWindow = 0 },
		"no timeout":      func(c *Config) { c.EvalTimeout = 0 },
		"no ack wait":     func(c *Config) { c.AckWait = 0 },
		"no batch":        func(c *Config) { c.PathInfoBatch = -1 },
		"no concurrency":  func(c *Config) { c.Concurrency = 0 },
		"no retry delay":  func(c *Config) { c.RetryDelay = 0 },
		"no ack timeout":  func(c *Config) { c.PublishAckTimeout = 0 },
		"no memory limit": func(c *Config) { c.MaxMemoryMB = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			mutate(&cfg)
			require.Error(t, cfg.Validate())
		})
	}
}
