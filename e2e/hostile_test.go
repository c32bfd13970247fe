package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// hostileFlake copies e2e/testdata/<name> into a temp dir, fills in its
// placeholders and a fresh salt.
func hostileFlake(t *testing.T, name string, r *strings.Replacer) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", name, "flake.nix"))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(r.Replace(string(src))), 0o644))
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	require.NoError(t, os.WriteFile(filepath.Join(dir, "salt.txt"), []byte(t.Name()+"-"+hex.EncodeToString(nonce[:])), 0o644))
	return dir
}

// requirePrintable fails on a raw control character (but newline and tab).
func requirePrintable(t *testing.T, what, s string) {
	t.Helper()
	for _, r := range s {
		require.False(t, (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f), "raw control %U in %s:\n%s", r, what, s)
	}
}

// `nixbus run` on each hostile flake ends with a verdict and exit code 1,
// and neither its output nor its logs hold a secret, a raw control
// character or a merged attribute.
func TestRunHostileFlakes(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "gerrit-password")
	const secret = "hunter2-e2e-must-not-leak"
	require.NoError(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o644))
	fill := strings.NewReplacer("SECRET", secretFile, "<FD>", "\xfd", "<FE>", "\xfe", "<BEL>", "\a", "<ESC>", "\x1b")

	t.Run("names", func(t *testing.T) {
		code, out, errOut := mainOut(t, "run", "--state-dir", t.TempDir(), "--nix.option", "substituters=", hostileFlake(t, "hostile-names", fill))
		require.Equal(t, 1, code, out+errOut)
		require.Contains(t, out, "verdict: FAILURE (4 jobs)", "no job merged or dropped")
		require.Contains(t, out, ` - "a\xfd": build failed`)
		require.Contains(t, out, ` - "a\xfe": build failed`)
		requirePrintable(t, "output", out)
		requirePrintable(t, "logs", errOut)
	})
	t.Run("paths", func(t *testing.T) {
		state := t.TempDir()
		code, out, errOut := mainOut(t, "run", "--state-dir", state, "--nix.option", "substituters=", hostileFlake(t, "hostile-paths", fill))
		require.Equal(t, 1, code, out+errOut)
		require.Contains(t, out, "verdict: FAILURE (5 jobs)")
		for _, attr := range []string{"readSecret", "zero", "dotdot", "outputOutside"} {
			require.Contains(t, out, " - "+attr+": evaluation error: the evaluation handed over a job nixbus refuses")
		}
		require.NotContains(t, out+errOut, secret)
		requirePrintable(t, "output", out)
		requirePrintable(t, "logs", errOut)

		// Neither the secret the flake aimed at nor the CI's signing key is
		// in the output, the logs or any message of the bus (the embedded
		// JetStream's files).
		key, err := os.ReadFile(filepath.Join(state, "keys", "nixbus-cache.sec"))
		require.NoError(t, err)
		_, keyB64, ok := strings.Cut(strings.TrimSpace(string(key)), ":")
		require.True(t, ok)
		require.NotContains(t, out+errOut, keyB64)
		files := 0
		require.NoError(t, filepath.WalkDir(filepath.Join(state, "nats"), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files++
			require.NotContains(t, string(data), secret, p)
			require.NotContains(t, string(data), keyB64, p)
			return nil
		}))
		require.Positive(t, files)
	})
}
