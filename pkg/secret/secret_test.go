package secret_test

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/secret"
)

func write(t *testing.T, dir, name, content string, mode fs.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode)) // past the umask
	return p
}

func TestReadRefusesFilesOthersCanAccess(t *testing.T) {
	const content = "hunter2-secret-content"
	for _, tc := range []struct {
		mode fs.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o700, true},
		{0o640, false}, {0o604, false}, {0o644, false}, {0o620, false}, {0o602, false}, {0o610, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			p := write(t, t.TempDir(), "key", content+"\n", tc.mode)
			got, err := secret.ReadString(p)
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, content, got)
				require.NoError(t, secret.Check(p))
				return
			}
			var pe *secret.PermissionError
			require.ErrorAs(t, err, &pe)
			require.Contains(t, err.Error(), p, "the error names the file")
			require.Contains(t, err.Error(), "chmod go-rwx "+p, "the error names the fix")
			require.NotContains(t, err.Error(), content)
			require.ErrorAs(t, secret.Check(p), &pe)
		})
	}
}

func TestReadTrustedRefusesWritableByOthers(t *testing.T) {
	dir := t.TempDir()
	b, err := secret.ReadTrusted(write(t, dir, "ok", "x", 0o644))
	require.NoError(t, err)
	require.Equal(t, "x", string(b))
	p := write(t, dir, "bad", "x", 0o664)
	_, err = secret.ReadTrusted(p)
	var pe *secret.PermissionError
	require.ErrorAs(t, err, &pe)
	require.Contains(t, err.Error(), "chmod go-w "+p)
	require.Error(t, secret.CheckTrusted(p))
}

func TestReadRefusesNonRegularAndHugeFiles(t *testing.T) {
	_, err := secret.Read("/dev/zero")
	require.ErrorContains(t, err, "not a regular file")
	_, err = secret.Read(t.TempDir())
	require.ErrorContains(t, err, "not a regular file")

	big := filepath.Join(t.TempDir(), "big")
	require.NoError(t, os.WriteFile(big, make([]byte, secret.MaxSize+1), 0o600))
	_, err = secret.Read(big)
	require.ErrorContains(t, err, "larger than")

	_, err = secret.Read(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = secret.Read("")
	require.Error(t, err)
}

func TestReadFollowsSymlinkAndChecksTarget(t *testing.T) {
	dir := t.TempDir()
	target := write(t, dir, "target", "s", 0o644)
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(target, link))
	_, err := secret.Read(link)
	var pe *secret.PermissionError
	require.True(t, errors.As(err, &pe), "a link to an open file is refused: %v", err)
	require.NoError(t, os.Chmod(target, 0o600))
	b, err := secret.Read(link)
	require.NoError(t, err)
	require.Equal(t, "s", string(b))
}

func TestLocateAndFlagUseCredentialsDirectory(t *testing.T) {
	creds := t.TempDir()
	key := write(t, creds, "gerrit-ssh-key", "k", 0o400)
	t.Setenv(secret.EnvCredentialsDirectory, creds)

	require.Equal(t, key, secret.Locate("", "gerrit-ssh-key"), "unset: the credential of the default name")
	require.Equal(t, "", secret.Locate("", "absent"))
	require.Equal(t, key, secret.Locate("gerrit-ssh-key", ""), "a bare name: the credential")
	require.Equal(t, "/etc/key", secret.Locate("/etc/key", "gerrit-ssh-key"), "a path stays a path")
	require.Equal(t, "relative", secret.Locate("relative", ""), "no such credential: a relative path")
	require.Equal(t, "..", secret.Locate("..", ""))

	fset := flag.NewFlagSet("t", flag.ContinueOnError)
	var def, set, path string
	secret.FlagVar(fset, &def, "def", "gerrit-ssh-key", "key")
	secret.FlagVar(fset, &set, "set", "other", "key")
	secret.FlagVar(fset, &path, "path", "other", "key")
	require.NoError(t, fset.Parse([]string{"--set", "gerrit-ssh-key", "--path", "/x/y"}))
	require.Equal(t, key, def)
	require.Equal(t, key, set)
	require.Equal(t, "/x/y", path)
	require.True(t, strings.Contains(fset.Lookup("def").Usage, secret.EnvCredentialsDirectory))

	t.Setenv(secret.EnvCredentialsDirectory, "")
	require.Equal(t, "", secret.Locate("", "gerrit-ssh-key"))
	require.Equal(t, "gerrit-ssh-key", secret.Locate("gerrit-ssh-key", ""))
}
