package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

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

	// Each secret's material: the text of the file, and the private bytes
	// inside it where it is a key.
	secrets := map[string][]byte{}
	sshKey, err := os.ReadFile(g.SSHConfig().KeyFile)
	require.NoError(t, err)
	for i, line := range strings.Split(string(sshKey), "\n") {
		if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
			secrets["gerrit ssh key line "+strconv.Itoa(i)] = []byte(line)
		}
	}
	raw, err := ssh.ParseRawPrivateKey(sshKey)
	require.NoError(t, err)
	edKey, ok := raw.(*ed25519.PrivateKey)
	require.True(t, ok, "%T", raw)
	secrets["gerrit ssh key seed"] = edKey.Seed()
	signing, err := os.ReadFile(filepath.Join(state, "keys", "nixbus-cache.sec"))
	require.NoError(t, err)
	_, b64, ok := strings.Cut(strings.TrimSpace(string(signing)), ":")
	require.True(t, ok)
	secrets["signing key"] = []byte(b64)
	signingKey, err := base64.StdEncoding.DecodeString(b64)
	require.NoError(t, err)
	require.Len(t, signingKey, ed25519.PrivateKeySize)
	secrets["signing key seed"] = signingKey[:ed25519.SeedSize] // the rest is the public key
	secrets["gerrit http password"] = []byte(rest.Password)
	pw, err := os.ReadFile(natsPassword)
	require.NoError(t, err)
	secrets["nats password"] = bytes.TrimSpace(pw)
	var leaks []leakFinder
	for name, s := range secrets {
		leaks = append(leaks, newLeakFinder(name, s))
	}

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
		for _, l := range leaks {
			require.Empty(t, l.find(data), "%s in bus file %s", l.name, p)
		}
		return nil
	}))
	require.Positive(t, files)
	for _, l := range leaks {
		require.Empty(t, l.find([]byte(out)), "%s in the logs", l.name)
	}
}

// leakFinder finds a secret in data whole or in part: any window of 8
// bytes of it, or of 12 characters of its hex or base64 (both alphabets,
// padded or not, at each of the three alignments of a secret inside a
// longer encoded text, such as "user:password" in a Basic auth header).
type leakFinder struct {
	name    string
	whole   []byte
	windows map[int]map[string]string // window length -> window -> form
}

func newLeakFinder(name string, secret []byte) leakFinder {
	l := leakFinder{name: name, whole: secret, windows: map[int]map[string]string{8: {}, 12: {}}}
	add := func(form string, text []byte, n int) {
		for i := 0; i+n <= len(text); i++ {
			l.windows[n][string(text[i:i+n])] = form
		}
	}
	add("part", secret, 8)
	add("hex", []byte(hex.EncodeToString(secret)), 12)
	for shift := range 3 {
		if shift >= len(secret) {
			break
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			e := enc.EncodeToString(secret[shift:])
			// The last group depends on what follows the secret.
			add("base64", []byte(e[:max(0, len(e)-4)]), 12)
		}
	}
	return l
}

// find names the form in which data holds the secret, or "".
func (l leakFinder) find(data []byte) string {
	if bytes.Contains(data, l.whole) {
		return "whole"
	}
	for n, windows := range l.windows {
		for i := 0; i+n <= len(data); i++ {
			if form, ok := windows[string(data[i:i+n])]; ok {
				return fmt.Sprintf("%s %q at %d", form, data[i:i+n], i)
			}
		}
	}
	return ""
}

// The finder sees a secret in the forms a leak takes and nothing in text
// without it.
func TestLeakFinder(t *testing.T) {
	secret := []byte("Zx9-qT4mWv2LkPa7Rb0yNc5HdUe")
	l := newLeakFinder("s", secret)
	basic := base64.StdEncoding.EncodeToString([]byte("nixbus:" + string(secret)))
	for _, leak := range []string{
		"pw=" + string(secret), "a part: " + string(secret[5:13]) + "!", "Authorization: Basic " + basic,
		"url " + base64.URLEncoding.EncodeToString(append([]byte("xy"), secret...)), "hex " + hex.EncodeToString(secret[3:12]),
	} {
		require.NotEmpty(t, l.find([]byte(leak)), leak)
	}
	require.Empty(t, l.find([]byte("level=DEBUG msg=\"review posted\" change=301 user=nixbus "+string(secret[:7]))))
}
