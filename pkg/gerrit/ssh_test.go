package gerrit_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/gerrit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDialRunsCommands(t *testing.T) {
	srv := gerrittest.Start(t, gerrittest.Options{})
	c, err := gerrit.Dial(t.Context(), srv.SSHConfig())
	require.NoError(t, err)
	out, err := c.Run(t.Context(), "gerrit version")
	require.NoError(t, err)
	require.Equal(t, "gerrit version 3.10.0\n", string(out))

	_, err = c.Run(t.Context(), "gerrit frobnicate")
	var xe *gerrit.ExitError
	require.ErrorAs(t, err, &xe)
	require.Equal(t, 127, xe.Status)
	require.NoError(t, c.Close())
}

func TestDialRefusesWrongHostKey(t *testing.T) {
	srv := gerrittest.Start(t, gerrittest.Options{})
	other := gerrittest.NewSigner(t)
	cfg := srv.SSHConfig()
	cfg.KnownHostsFile = gerrittest.WriteKnownHosts(t, srv.Addr, other.PublicKey())
	_, err := gerrit.Dial(t.Context(), cfg)
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, "host key mismatch")
	require.Contains(t, msg, "["+strings.Replace(srv.Addr, ":", "]:", 1))
	require.Contains(t, msg, cfg.KnownHostsFile)
	require.Contains(t, msg, "refusing to connect")
	require.Zero(t, srv.AuthFailures(), "no credentials may be offered to an unverified host")
	require.Empty(t, srv.Commands())
}

func TestDialRefusesUnknownHost(t *testing.T) {
	srv := gerrittest.Start(t, gerrittest.Options{})
	cfg := srv.SSHConfig()
	// A known_hosts file that pins the right key, but for another port.
	cfg.KnownHostsFile = gerrittest.WriteKnownHosts(t, "127.0.0.1:1", srv.HostKey.PublicKey())
	_, err := gerrit.Dial(t.Context(), cfg)
	require.ErrorContains(t, err, "is not in known_hosts file "+cfg.KnownHostsFile)
}

func TestDialRefusedKey(t *testing.T) {
	srv := gerrittest.Start(t, gerrittest.Options{})
	cfg := srv.SSHConfig()
	cfg.KeyFile, _ = gerrittest.NewClientKey(t)
	_, err := gerrit.Dial(t.Context(), cfg)
	require.ErrorContains(t, err, "unable to authenticate")
	require.Equal(t, 1, srv.AuthFailures())
}

func TestKeepaliveClosesDeadConnection(t *testing.T) {
	srv := gerrittest.Start(t, gerrittest.Options{})
	c, err := gerrit.Dial(t.Context(), srv.SSHConfig())
	require.NoError(t, err)
	done := c.Done()
	srv.WaitConnections(t, 1)
	srv.StallKeepalives()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a connection whose keepalives go unanswered stayed open")
	}
	require.ErrorContains(t, c.Err(), "keepalive")
	require.NoError(t, c.Close())
}

func TestSSHConfig(t *testing.T) {
	for _, tc := range []struct {
		addr, host string
		port       int
		url        string
		bad        bool
	}{
		{addr: "review.example.com", host: "review.example.com", port: 29418, url: "ssh://ci@review.example.com:29418/a/b"},
		{addr: "review.example.com:2222", host: "review.example.com", port: 2222, url: "ssh://ci@review.example.com:2222/a/b"},
		{addr: "[::1]:29418", host: "::1", port: 29418, url: "ssh://ci@[::1]:29418/a/b"},
		{addr: "-oProxyCommand=x", bad: true},
		{addr: "host:0", bad: true},
		{addr: "host:http", bad: true},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			cfg := gerrit.SSHConfig{Address: tc.addr, User: "ci", KeyFile: "k", KnownHostsFile: "kh"}
			host, port, err := cfg.HostPort()
			if tc.bad {
				require.Error(t, err)
				require.Error(t, cfg.Validate())
				return
			}
			require.NoError(t, err)
			require.NoError(t, cfg.Validate())
			require.Equal(t, tc.host, host)
			require.Equal(t, tc.port, port)
			require.Equal(t, tc.url, cfg.RepoURL("a/b"))
		})
	}
	require.NoError(t, gerrit.SSHConfig{}.Validate(), "no gerrit is a valid configuration")
	require.Error(t, gerrit.SSHConfig{Address: "h"}.Validate())
}

func TestDialRefusesOpenKeyFiles(t *testing.T) {
	for _, tc := range []struct {
		name, fix string
		file      func(*gerrit.SSHConfig) string
		mode      os.FileMode
	}{
		{"key readable by group", "chmod go-rwx", func(c *gerrit.SSHConfig) string { return c.KeyFile }, 0o640},
		{"key readable by others", "chmod go-rwx", func(c *gerrit.SSHConfig) string { return c.KeyFile }, 0o604},
		{"known_hosts writable by group", "chmod go-w", func(c *gerrit.SSHConfig) string { return c.KnownHostsFile }, 0o664},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := gerrittest.Start(t, gerrittest.Options{})
			cfg := srv.SSHConfig()
			require.NoError(t, os.Chmod(tc.file(&cfg), tc.mode))
			_, err := gerrit.Dial(t.Context(), cfg)
			require.ErrorContains(t, err, "are too open")
			require.ErrorContains(t, err, tc.fix+" "+tc.file(&cfg))
			require.Zero(t, srv.AuthFailures())
			require.Empty(t, srv.Commands())
		})
	}
}

func TestHTTPPasswordRefusesOpenFile(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	cfg := gerrit.HTTPConfig{URL: "https://gerrit.example", User: "ci", PasswordFile: pw}
	got, err := cfg.Password()
	require.NoError(t, err)
	require.Equal(t, "s3cret", got)
	require.NoError(t, os.Chmod(pw, 0o644))
	_, err = cfg.Password()
	require.ErrorContains(t, err, "chmod go-rwx "+pw)
	require.NotContains(t, err.Error(), "s3cret")
}
