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
		{"links", append([]string{"--cache-uploader.gcroots-dir=/var/lib/nixbus/gcroots", "--cache-uploader.outputs-dir=/srv/outputs", "--cache-uploader.roots-for-manual"}, base...), ""},
		{"relative gcroots", append([]string{"--cache-uploader.gcroots-dir=gcroots"}, base...), "cache-uploader.gcroots-dir must be absolute"},
		{"relative outputs", append([]string{"--cache-uploader.outputs-dir=out"}, base...), "cache-uploader.outputs-dir must be absolute"},
		{"same dirs", append([]string{"--cache-uploader.gcroots-dir=/x/", "--cache-uploader.outputs-dir=/x"}, base...), "must differ"},
		{"no branch", append([]string{"--cache-uploader.outputs-dir=/x", "--cache-uploader.default-branch=refs/heads/"}, base...), "cache-uploader.default-branch"},
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
				require.Equal(t, "main", c.DefaultBranch)
				return
			}
			require.ErrorContains(t, err, tt.err)
		})
	}
}

func TestBuildersFlag(t *testing.T) {
	for in, want := range map[string][]string{"": nil, "a": {"a"}, " a, b ,,": {"a", "b"}} {
		var c Config
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		c.RegisterFlags(fs)
		require.NoError(t, fs.Parse([]string{"--cache-uploader.builders=" + in}))
		require.Equal(t, want, c.Builders, in)
	}
}
