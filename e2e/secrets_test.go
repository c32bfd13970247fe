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
	"nixbus.dev/nixbus/pkg/natstest"
)

// TestSecretsStayOffTheBusAndLogs runs a Gerrit change through every
// service, logging at debug level, and then looks for the content of each
// secret (Gerrit's SSH key, the CI's signing key) in every log line and in
// every file of the JetStream store, i.e. every message of the bus.
func TestSecretsStayOffTheBusAndLogs(t *testing.T) {
	g := gerrittest.Start(t, gerrittest.Options{})
	repo := g.CreateProject(t, "demo")
	ps := repo.UploadPatchset(t, 301, 1, saltedExample(t))
	srv := natstest.Start(t)

	state := t.TempDir()
	o := testOptions(t, srv.URL, state)
	c := testConfigs(t)
	fs := newFlagSet()
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(append([]string{"--reporter.log-base-url", "http://ci.example/logs"}, gerritFlags(g)...)))
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(t.Context())
	inst, err := app.Start(ctx, o, c, io.Discard, log)
	require.NoError(t, err)
	g.Push(ps)
	r := g.WaitReviews(t, 1)[0]
	require.Equal(t, "-1", r.Labels["Verified"], r.Raw)
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
