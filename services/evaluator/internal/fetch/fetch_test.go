package fetch

import (
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/gerrit"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const flake = `{ outputs = { self }: { hydraJobs = { }; }; }
`

func setup(t *testing.T) (*gerrittest.Server, *gerrittest.Repo, *Fetcher) {
	t.Helper()
	srv := gerrittest.Start(t, gerrittest.Options{})
	repo := srv.CreateProject(t, "nixbus")
	f, err := New(Config{SSH: srv.SSHConfig()})
	require.NoError(t, err)
	return srv, repo, f
}

func TestFetchChangeRefOverSSH(t *testing.T) {
	srv, repo, f := setup(t)
	base := repo.PushBranch(t, "main", gerrittest.WriteFiles(t, map[string]string{"flake.nix": flake}))
	rev1 := repo.PushChange(t, 1234, 1, gerrittest.WriteFiles(t, map[string]string{"flake.nix": flake, "ps.txt": "one"}))
	rev2 := repo.PushChange(t, 1234, 2, gerrittest.WriteFiles(t, map[string]string{"flake.nix": flake, "ps.txt": "two", "sub/dir/x": "x"}))
	require.NotEqual(t, rev1, rev2)

	work := t.TempDir()
	dir, err := f.Fetch(t.Context(), &nixbuspb.ChangeEvent{
		Project: "nixbus", Change: 1234, Patchset: 2, Ref: gerrit.ChangeRef(1234, 2), Revision: rev2, RepoUrl: srv.RepoURL("nixbus"),
	}, work)
	require.NoError(t, err)
	require.Equal(t, work, dir)
	requireFile(t, filepath.Join(dir, "ps.txt"), "two")
	requireFile(t, filepath.Join(dir, "sub/dir/x"), "x")
	requireFile(t, filepath.Join(dir, "flake.nix"), flake)
	require.NoDirExists(t, filepath.Join(dir, ".git"))
	require.Contains(t, srv.Commands(), "git-upload-pack '/nixbus'")

	// A ref that does not hold the event's revision is refused.
	_, err = f.Fetch(t.Context(), &nixbuspb.ChangeEvent{
		Change: 1234, Patchset: 1, Revision: rev2, RepoUrl: srv.RepoURL("nixbus"),
	}, t.TempDir())
	require.ErrorContains(t, err, "not at the event's revision")

	// A branch, kept as a git checkout when asked.
	keep, err := New(Config{SSH: srv.SSHConfig(), KeepGitDir: true})
	require.NoError(t, err)
	work = t.TempDir()
	_, err = keep.Fetch(t.Context(), &nixbuspb.ChangeEvent{Ref: "refs/heads/main", Revision: base, RepoUrl: srv.RepoURL("nixbus")}, work)
	require.NoError(t, err)
	require.NoFileExists(t, filepath.Join(work, "ps.txt"))
	require.Equal(t, base, gerrittest.Git(t, work, "rev-parse", "HEAD"))
}

func TestFetchBranchThatMovedOn(t *testing.T) {
	srv, repo, f := setup(t)
	old := repo.PushBranch(t, "main", gerrittest.WriteFiles(t, map[string]string{"flake.nix": flake, "v": "1"}))
	repo.PushBranch(t, "main", gerrittest.WriteFiles(t, map[string]string{"flake.nix": flake, "v": "2"}))
	work := t.TempDir()
	_, err := f.Fetch(t.Context(), &nixbuspb.ChangeEvent{Branch: "main", Revision: old, RepoUrl: srv.RepoURL("nixbus")}, work)
	require.NoError(t, err)
	requireFile(t, filepath.Join(work, "v"), "1")
}

func TestFetchRefusesWrongHostKey(t *testing.T) {
	srv, repo, _ := setup(t)
	repo.PushChange(t, 1, 1, gerrittest.WriteFiles(t, map[string]string{"flake.nix": flake}))
	cfg := srv.SSHConfig()
	cfg.KnownHostsFile = gerrittest.WriteKnownHosts(t, srv.Addr, gerrittest.NewSigner(t).PublicKey())
	f, err := New(Config{SSH: cfg})
	require.NoError(t, err)
	_, err = f.Fetch(t.Context(), &nixbuspb.ChangeEvent{Change: 1, Patchset: 1, RepoUrl: srv.RepoURL("nixbus")}, t.TempDir())
	require.ErrorContains(t, err, "Host key verification failed")
	require.Zero(t, srv.AuthFailures())
}

func TestFetchRefusesBadInput(t *testing.T) {
	srv, repo, f := setup(t)
	repo.PushChange(t, 1234, 1, gerrittest.WriteFiles(t, map[string]string{"flake.nix": flake}))
	good := srv.RepoURL("nixbus")
	for _, tc := range []struct {
		name string
		ev   *nixbuspb.ChangeEvent
		err  string
	}{
		{"no ref", &nixbuspb.ChangeEvent{RepoUrl: good}, "no ref"},
		{"wrong shard", &nixbuspb.ChangeEvent{Ref: "refs/changes/35/1234/1", RepoUrl: good}, "shard"},
		{"dotdot branch", &nixbuspb.ChangeEvent{Ref: "refs/heads/../../x", RepoUrl: good}, "neither"},
		{"option as ref", &nixbuspb.ChangeEvent{Ref: "--upload-pack=touch /tmp/pwned", RepoUrl: good}, "neither"},
		{"dash branch", &nixbuspb.ChangeEvent{Branch: "-x", RepoUrl: good}, "not a safe branch"},
		{"HEAD", &nixbuspb.ChangeEvent{Ref: "HEAD", RepoUrl: good}, "neither"},
		{"bad revision", &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1, Revision: "HEAD~1", RepoUrl: good}, "not a commit id"},
		{"no url", &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1}, "no repository URL"},
		{"ext transport", &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1, RepoUrl: "ext::sh -c touch% /tmp/pwned"}, "scheme"},
		{"file", &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1, RepoUrl: "file:///etc"}, "not <scheme>"},
		{"option host", &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1, RepoUrl: "ssh://-oProxyCommand=touch/x"}, "not <scheme>"},
		{"option user", &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1, RepoUrl: "ssh://-oProxyCommand=x@host/x"}, "not <scheme>"},
		{"https password", &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1, RepoUrl: "https://u:p@host/x"}, "credentials"},
		{"unknown project", &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1, RepoUrl: srv.RepoURL("other")}, "project other not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.Fetch(t.Context(), tc.ev, t.TempDir())
			require.ErrorContains(t, err, tc.err)
		})
	}
	_, err := New(Config{SSH: gerrit.SSHConfig{KeyFile: "/keys/my key", KnownHostsFile: "/k"}})
	require.ErrorContains(t, err, "characters ssh would interpret")
	noSSH, err := New(Config{})
	require.NoError(t, err)
	_, err = noSSH.Fetch(t.Context(), &nixbuspb.ChangeEvent{Change: 1234, Patchset: 1, RepoUrl: good}, t.TempDir())
	require.ErrorContains(t, err, "no ssh key")
}

func TestFetchOverHTTPS(t *testing.T) {
	gitBin, err := exec.LookPath("git")
	require.NoError(t, err)
	srv := gerrittest.Start(t, gerrittest.Options{})
	repo := srv.CreateProject(t, "nixbus")
	rev := repo.PushChange(t, 7, 3, gerrittest.WriteFiles(t, map[string]string{"flake.nix": flake, "https.txt": "yes"}))

	// git's own smart HTTP server, behind a check of the credentials.
	backend := &cgi.Handler{
		Path: gitBin, Args: []string{"http-backend"}, Root: "/a",
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(repo.Dir), "GIT_HTTP_EXPORT_ALL=1"},
	}
	var mu sync.Mutex
	var unauthorized int
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "nixbus" || p != "http-pw" {
			mu.Lock()
			unauthorized++
			mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Basic realm="gerrit"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(web.Close)
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("http-pw\n"), 0o600))

	url := web.URL + "/a/" + filepath.Base(repo.Dir)
	ev := &nixbuspb.ChangeEvent{Change: 7, Patchset: 3, Revision: rev, RepoUrl: url}
	f, err := New(Config{HTTP: gerrit.HTTPConfig{URL: web.URL, User: "nixbus", PasswordFile: pw}})
	require.NoError(t, err)
	work := t.TempDir()
	_, err = f.Fetch(t.Context(), ev, work)
	require.NoError(t, err)
	requireFile(t, filepath.Join(work, "https.txt"), "yes")
	mu.Lock()
	require.Zero(t, unauthorized)
	mu.Unlock()

	// Credentials go to the configured host only.
	other, err := New(Config{HTTP: gerrit.HTTPConfig{URL: "https://elsewhere.example.com", User: "nixbus", PasswordFile: pw}})
	require.NoError(t, err)
	_, err = other.Fetch(t.Context(), ev, t.TempDir())
	require.Error(t, err)
	mu.Lock()
	require.Positive(t, unauthorized)
	mu.Unlock()
}

func TestSSHCommandIsFixed(t *testing.T) {
	k := t.TempDir()
	require.NoError(t, os.WriteFile(k+"/id", []byte("key"), 0o600))
	require.NoError(t, os.WriteFile(k+"/known_hosts", nil, 0o644))
	f, err := New(Config{SSH: gerrit.SSHConfig{Address: "review.example.com:2222", KeyFile: k + "/id", KnownHostsFile: k + "/known_hosts"}})
	require.NoError(t, err)
	require.Equal(t, "'ssh' -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o 'UserKnownHostsFile="+k+"/known_hosts' "+
		"-o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no -o IdentitiesOnly=yes -i '"+k+"/id' "+
		"-o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=3 -p 2222", f.sshCommand)
	require.Equal(t, `'it'\''s'`, shellQuote("it's"))

	// A key others may read, or a known_hosts others may write, is refused.
	require.NoError(t, os.Chmod(k+"/id", 0o644))
	_, err = New(Config{SSH: gerrit.SSHConfig{KeyFile: k + "/id", KnownHostsFile: k + "/known_hosts"}})
	require.ErrorContains(t, err, "chmod go-rwx "+k+"/id")
	require.NoError(t, os.Chmod(k+"/id", 0o600))
	require.NoError(t, os.Chmod(k+"/known_hosts", 0o666))
	_, err = New(Config{SSH: gerrit.SSHConfig{KeyFile: k + "/id", KnownHostsFile: k + "/known_hosts"}})
	require.ErrorContains(t, err, "chmod go-w "+k+"/known_hosts")
}

func requireFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(want), strings.TrimSpace(string(b)))
}
