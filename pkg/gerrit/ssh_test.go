package gerrit_test

import (
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
