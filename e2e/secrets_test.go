package e2e

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natsauth"
)

// TestSecretsStayOffTheBusAndLogs runs a Gerrit change through every
// service, on a NATS that wants a password, voting over Gerrit's REST API,
// logging at debug level, and then looks for the content of each secret
// (Gerrit's SSH key and HTTP password, the NATS password, the CI's signing
// key) in every log line and in every file of the JetStream store, i.e.
// every message of the bus.
func TestSecretsStayOffTheBusAndLogs(t *testing.T) {
	g := gerrittest.Start(t, gerrittest.Options{})
	repo := g.CreateProject(t, "demo")
	ps := repo.UploadPatchset(t, 301, 1, saltedExample(t))
	rest, httpCfg := gerrittest.StartREST(t)
	srv, dir := startSecured(t, natsauth.Password)
	natsPassword := natsauth.SecretFile(dir, natsauth.Password, bus.RoleAdmin)

	state := t.TempDir()
	var o app.Options
	ofs := newFlagSet()
	o.RegisterFlags(ofs)
	require.NoError(t, ofs.Parse([]string{"--nats.url", srv.URL, "--state-dir", state, "--nix.option", "substituters=",
		"--nats.user", bus.RoleAdmin, "--nats.password-file", natsPassword}))
	c := testConfigs(t)
	fs := newFlagSet()
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(append([]string{"--reporter.log-base-url", "http://ci.example/logs",
		"--gerrit.review-via", "rest", "--gerrit.http.url", httpCfg.URL, "--gerrit.http.user", httpCfg.User,
		"--gerrit.http.password-file", httpCfg.PasswordFile}, gerritFlags(g)...)))

	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(t.Context())
	inst, err := app.Start(ctx, o, c, io.Discard, log)
	require.NoError(t, err)
	g.Push(ps)
	rest.WaitReviews(t, 1)
	cancel()
	require.NoError(t, inst.Wait())

	secrets := map[string]string{}
	sshKey, err := os.ReadFile(g.SSHConfig().KeyFile)
	require.NoError(t, err)
	for i, line := range strings.Split(string(sshKey), "\n") {
		if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
			secrets["gerrit ssh key line "+strconv.Itoa(i)] = line
		}
	}
	signing, err := os.ReadFile(filepath.Join(state, "keys", "nixbus-cache.sec"))
	require.NoError(t, err)
	_, b64, ok := strings.Cut(strings.TrimSpace(string(signing)), ":")
	require.True(t, ok)
	secrets["signing key"] = b64
	secrets["gerrit http password"] = rest.Password
	pw, err := os.ReadFile(natsPassword)
	require.NoError(t, err)
	secrets["nats password"] = strings.TrimSpace(string(pw))
	require.Greater(t, len(secrets), 1)

	out := logs.String()
	require.Contains(t, out, "level=DEBUG", "the run logged at debug level")
	files := 0
	require.NoError(t, filepath.WalkDir(srv.StoreDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		for name, s := range secrets {
			require.NotContains(t, string(data), s, "%s in bus file %s", name, p)
		}
		return nil
	}))
	require.Positive(t, files)
	for name, s := range secrets {
		require.NotContains(t, out, s, "%s in the logs", name)
	}
}
