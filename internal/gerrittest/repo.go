package gerrittest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nixbus.dev/nixbus/pkg/gerrit"
)

// Repo is a bare git repository served as a Gerrit project.
type Repo struct {
	Project string
	Dir     string
}

// CreateProject makes an empty bare repository in t.TempDir() and serves it
// as project (fetched as ssh://.../<project>).
func (s *Server) CreateProject(t testing.TB, project string) *Repo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo.git")
	Git(t, "", "init", "--quiet", "--bare", dir)
	s.mu.Lock()
	s.repos[strings.Trim(project, "/")] = dir
	s.mu.Unlock()
	return &Repo{Project: project, Dir: dir}
}

// Commit records the files of srcDir (all of them, as they are) as a
// commit on top of parent ("" for none) and returns its id. Nothing is
// checked out or changed in srcDir.
func (r *Repo) Commit(t testing.TB, srcDir, parent, message string) string {
	t.Helper()
	index := filepath.Join(t.TempDir(), "index")
	env := []string{"GIT_DIR=" + r.Dir, "GIT_WORK_TREE=" + srcDir, "GIT_INDEX_FILE=" + index}
	gitEnv(t, srcDir, env, "add", "--all", "--force", ".")
	tree := gitEnv(t, srcDir, env, "write-tree")
	args := []string{"commit-tree", tree, "-m", message}
	if parent != "" {
		args = append(args, "-p", parent)
	}
	return gitEnv(t, srcDir, env, args...)
}

// PushChange stores the files of srcDir as patchset ps of change on
// refs/changes/NN/change/ps (on top of main, if there is one) and returns
// the commit id.
func (r *Repo) PushChange(t testing.TB, change int64, ps int32, srcDir string) string {
	t.Helper()
	parent := r.Head(t, "refs/heads/main")
	rev := r.Commit(t, srcDir, parent, "change "+gerrit.ChangeRef(change, ps))
	Git(t, "", "--git-dir", r.Dir, "update-ref", gerrit.ChangeRef(change, ps), rev)
	return rev
}

// UploadPatchset is what `git push origin HEAD:refs/for/main` does: it
// stores srcDir as patchset ps of change (PushChange) and returns the
// patchset-created event for it, with the real revision. Push it to
// announce the patchset.
func (r *Repo) UploadPatchset(t testing.TB, change int64, ps int32, srcDir string) Event {
	t.Helper()
	ev := PatchsetCreated(r.Project, change, ps)
	ev.Revision = r.PushChange(t, change, ps, srcDir)
	return ev
}

// PushBranch stores the files of srcDir as the new tip of branch and
// returns the commit id.
func (r *Repo) PushBranch(t testing.TB, branch, srcDir string) string {
	t.Helper()
	ref := "refs/heads/" + branch
	rev := r.Commit(t, srcDir, r.Head(t, ref), "update "+branch)
	Git(t, "", "--git-dir", r.Dir, "update-ref", ref, rev)
	return rev
}

// Head is the commit ref points at, or "" when it does not exist.
func (r *Repo) Head(t testing.TB, ref string) string {
	t.Helper()
	out, err := exec.Command("git", "--git-dir", r.Dir, "rev-parse", "--verify", "--quiet", ref+"^{commit}").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// WriteFiles writes files (relative name -> content) into a new directory
// in t.TempDir() and returns it.
func WriteFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatalf("mkdir: %v", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	return dir
}

// CopyDir copies the regular files under src into a new directory in
// t.TempDir() (to add a salt.txt to the example flake, say) and returns it.
func CopyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	return dst
}

// Git runs git with args in dir and returns its trimmed output.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), identity...)
	return run(t, cmd)
}

func gitEnv(t testing.TB, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), identity...), env...)
	return run(t, cmd)
}

var identity = []string{
	"GIT_AUTHOR_NAME=Jane Developer", "GIT_AUTHOR_EMAIL=jane@example.com", "GIT_AUTHOR_DATE=1700000000 +0000",
	"GIT_COMMITTER_NAME=Jane Developer", "GIT_COMMITTER_EMAIL=jane@example.com", "GIT_COMMITTER_DATE=1700000000 +0000",
	"GIT_CONFIG_NOSYSTEM=1",
}

func run(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}
