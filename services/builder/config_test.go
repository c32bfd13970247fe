package builder

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		err  string
		want func(t *testing.T, c Config)
	}{
		{"defaults", []string{"--builder.system=x86_64-linux"}, "", func(t *testing.T, c Config) {
			require.Equal(t, 3*time.Hour, c.Timeout)
			require.Equal(t, 1200*time.Second, c.MaxSilentTime)
			require.Equal(t, 1, c.Concurrency)
			require.False(t, c.RemoteOnly)
			require.False(t, c.Instant)
		}},
		{"remote only", []string{"--builder.system=aarch64-linux", "--builder.remote-only", "--builder.concurrency=8"}, "", func(t *testing.T, c Config) {
			require.True(t, c.RemoteOnly)
			require.Equal(t, 8, c.Concurrency)
		}},
		{"no system", nil, "builder.system is required", nil},
		{"no concurrency", []string{"--builder.system=x", "--builder.concurrency=0"}, "builder.concurrency", nil},
		{"relative store", []string{"--builder.system=x", "--builder.store-dir=store"}, "builder.store-dir", nil},
		{"no timeout", []string{"--builder.system=x", "--builder.timeout=0s"}, "builder.timeout", nil},
		{"no kill grace", []string{"--builder.system=x", "--builder.kill-grace=0s"}, "builder.kill-grace", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			c.RegisterFlags(fs)
			require.NoError(t, fs.Parse(tt.args))
			err := c.Validate()
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			tt.want(t, c)
		})
	}
}
