package cacheuploader

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfig(t *testing.T) {
	base := []string{"--cache-uploader.cache-url=file:///tmp/cache", "--cache-uploader.secret-key-file=/tmp/k.sec"}
	tests := []struct {
		name string
		args []string
		err  string
	}{
		{"defaults", base, ""},
		{"no cache", base[1:], "cache-uploader.cache-url is required"},
		{"no key", base[:1], "cache-uploader.secret-key-file is required"},
		{"bad key name", append([]string{"--cache-uploader.generate-key", "--cache-uploader.key-name=a:b"}, base...), "cache-uploader.key-name"},
		{"no concurrency", append([]string{"--cache-uploader.concurrency=0"}, base...), "cache-uploader.concurrency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			c.RegisterFlags(fs)
			require.NoError(t, fs.Parse(tt.args))
			err := c.Validate()
			if tt.err == "" {
				require.NoError(t, err)
				require.Equal(t, "nixbus-1", c.KeyName)
				return
			}
			require.ErrorContains(t, err, tt.err)
		})
	}
}
