// Package fetch checks out the revision a change event names: a Gerrit
// patchset ref (refs/changes/NN/N/K) or a branch, fetched with git over SSH
// (the Gerrit account's key, the host pinned by known_hosts) or HTTPS (the
// account's HTTP password). git runs without a shell, with nothing from the
// event in its SSH command.
package fetch

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/gerrit"
	"nixbus.dev/nixbus/pkg/secret"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Config says how to reach Gerrit's git.
type Config struct {
	// SSH gives the key, known_hosts file and default port for ssh:// URLs.
	SSH gerrit.SSHConfig
	// HTTP gives the credentials sent to https:// URLs on its host.
	HTTP gerrit.HTTPConfig
	// Git and SSHBin are the executables; "git" and "ssh" from PATH by default.
	Git, SSHBin string
	// KeepGitDir leaves .git in the checkout; by default it is removed so
	// that the flake is a plain directory (cheap to copy as path:).
	KeepGitDir bool
	// Timeout bounds one fetch (10 minutes by default).
	Timeout time.Duration
}

// Fetcher makes checkouts; it satisfies the evaluator's Fetcher.
type Fetcher struct {
	cfg Config
	// sshCommand is GIT_SSH_COMMAND, fixed at construction.
	sshCommand string
}

// safePath is what key and known_hosts paths may hold: ssh reads
// UserKnownHostsFile as a blank-separated list with %-expansion, so
// anything else could change its meaning.
var safePath = regexp.MustCompile(`^[A-Za-z0-9_./,+=@-]+$`)

// New checks cfg and returns a Fetcher.
func New(cfg Config) (*Fetcher, error) {
	if cfg.Git == "" {
		cfg.Git = "git"
	}
	if cfg.SSHBin == "" {
		cfg.SSHBin = "ssh"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if err := cfg.HTTP.Validate(); err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	f := &Fetcher{cfg: cfg}
	if cfg.SSH.KeyFile == "" && cfg.SSH.KnownHostsFile == "" {
		return f, nil
	}
	if cfg.SSH.KeyFile == "" || cfg.SSH.KnownHostsFile == "" {
		return nil, errors.New("fetch: ssh needs both a key file and a known_hosts file")
	}
	key, err := filepath.Abs(cfg.SSH.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("fetch: key file: %w", err)
	}
	known, err := filepath.Abs(cfg.SSH.KnownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("fetch: known_hosts file: %w", err)
	}
	for _, p := range []string{key, known, cfg.SSHBin} {
		if !safePath.MatchString(p) {
			return nil, fmt.Errorf("fetch: path %q has characters ssh would interpret; use a plain path", p)
		}
	}
	if err := secret.Check(key); err != nil {
		return nil, fmt.Errorf("fetch: ssh key: %w", err)
	}
	if err := secret.CheckTrusted(known); err != nil {
		return nil, fmt.Errorf("fetch: known_hosts: %w", err)
	}
	port := gerrit.DefaultPort
	if cfg.SSH.Address != "" {
		if _, port, err = cfg.SSH.HostPort(); err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
	}
	// git runs GIT_SSH_COMMAND through sh and appends its own arguments
	// (the URL's port, user@host, the upload-pack command) safely; this
	// part holds only operator paths, quoted, and fixed options.
	f.sshCommand = strings.Join([]string{
		shellQuote(cfg.SSHBin), "-F", "/dev/null", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", shellQuote("UserKnownHostsFile=" + known),
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
		"-o", "IdentitiesOnly=yes", "-i", shellQuote(key),
		"-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
		"-p", strconv.Itoa(port),
	}, " ")
	return f, nil
}

// shellQuote quotes s for sh: in single quotes, where each single quote
// of s closes the quotes, is escaped with a backslash, and reopens them.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Fetch checks out ev's ref (at ev's revision, when it names one) into
// workDir and returns workDir.
func (f *Fetcher) Fetch(ctx context.Context, ev *nixbuspb.ChangeEvent, workDir string) (string, error) {
	ref, err := eventRef(ev)
	if err != nil {
		return "", err
	}
	rev := ev.GetRevision()
	if rev != "" && !gerrit.IsCommit(rev) {
		return "", fmt.Errorf("revision %q is not a commit id", rev)
	}
	repo, env, err := f.remote(ev.GetRepoUrl())
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return "", fmt.Errorf("create checkout dir: %w", err)
	}
	git := func(args ...string) (string, error) { return f.git(ctx, workDir, env, args...) }
	if _, err := git("init", "--quiet"); err != nil {
		return "", err
	}
	if _, err := git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--depth", "1", repo, "+"+ref+":refs/nixbus/fetched"); err != nil {
		return "", err
	}
	head, err := git("rev-parse", "--verify", "refs/nixbus/fetched^{commit}")
	if err != nil {
		return "", err
	}
	if rev != "" && head != rev {
		if strings.HasPrefix(ref, "refs/changes/") {
			return "", fmt.Errorf("%s is at %s, not at the event's revision %s", ref, head, rev)
		}
		// The branch moved on since the event: fetch the event's commit.
		if _, err := git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--depth", "1", repo, rev); err != nil {
			return "", fmt.Errorf("%s moved on to %s; fetch the event's revision: %w", ref, head, err)
		}
		head = rev
	}
	if _, err := git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", head); err != nil {
		return "", err
	}
	if !f.cfg.KeepGitDir {
		if err := os.RemoveAll(filepath.Join(workDir, ".git")); err != nil {
			return "", fmt.Errorf("remove .git from checkout: %w", err)
		}
	}
	return workDir, nil
}

// eventRef is the ref to fetch, checked to be a change ref or a branch.
func eventRef(ev *nixbuspb.ChangeEvent) (string, error) {
	ref := ev.GetRef()
	switch {
	case ref != "":
	case ev.GetChange() > 0 && ev.GetPatchset() > 0:
		ref = gerrit.ChangeRef(ev.GetChange(), ev.GetPatchset())
	case ev.GetBranch() != "":
		var err error
		if ref, err = gerrit.BranchRef(ev.GetBranch()); err != nil {
			return "", err
		}
	default:
		return "", errors.New("the event names no ref, patchset or branch")
	}
	if err := gerrit.CheckRef(ref); err != nil {
		return "", err
	}
	return ref, nil
}

// remote checks the repository URL and returns it with the environment
// that authenticates to it.
func (f *Fetcher) remote(raw string) (string, []string, error) {
	if raw == "" {
		return "", nil, errors.New("the event names no repository URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Errorf("repository URL: %w", err)
	}
	if u.Host == "" || strings.HasPrefix(u.Host, "-") || strings.HasPrefix(u.Hostname(), "-") ||
		strings.HasPrefix(u.User.Username(), "-") || u.Path == "" || u.Path == "/" || u.RawQuery != "" || u.Fragment != "" {
		return "", nil, fmt.Errorf("repository URL %q is not <scheme>://[user@]host[:port]/<project>", raw)
	}
	env := []string{"GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1"}
	switch u.Scheme {
	case "ssh":
		if _, ok := u.User.Password(); ok {
			return "", nil, errors.New("repository URL holds a password; ssh uses the key")
		}
		if f.sshCommand == "" {
			return "", nil, fmt.Errorf("cannot fetch %s: no ssh key and known_hosts file configured", raw)
		}
		env = append(env, "GIT_SSH_COMMAND="+f.sshCommand, "GIT_SSH_VARIANT=ssh")
	case "https", "http":
		if u.User != nil {
			return "", nil, errors.New("repository URL holds credentials; configure the HTTP user and password file instead")
		}
		cred, err := f.httpAuth(u)
		if err != nil {
			return "", nil, err
		}
		env = append(env, cred...)
	default:
		return "", nil, fmt.Errorf("repository URL scheme %q: want ssh, https or http", u.Scheme)
	}
	return u.String(), env, nil
}

// httpAuth sends the configured credentials, as a header passed through
// git's environment (never its command line), to the configured host only.
func (f *Fetcher) httpAuth(u *url.URL) ([]string, error) {
	h := f.cfg.HTTP
	if h.User == "" {
		return nil, nil
	}
	base, err := url.Parse(h.URL)
	if err != nil || !strings.EqualFold(base.Host, u.Host) || base.Scheme != u.Scheme {
		return nil, nil
	}
	pw, err := h.Password()
	if err != nil {
		return nil, err
	}
	auth := base64.StdEncoding.EncodeToString([]byte(h.User + ":" + pw))
	return []string{
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic " + auth,
	}, nil
}

// git runs git in dir with env (on top of a GIT_-free environment) and
// returns its trimmed output; a failure carries git's stderr.
func (f *Fetcher) git(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, f.cfg.Git, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("git %s: %w", args[0], ctx.Err())
		}
		return "", fmt.Errorf("git %s: %w: %s", gitVerb(args), err, tail(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func gitVerb(args []string) string {
	for _, a := range args {
		if a != "-c" && !strings.Contains(a, "=") {
			return a
		}
	}
	return args[0]
}

// tail keeps the last lines of git's stderr.
func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 6 {
		lines = lines[len(lines)-6:]
	}
	return strings.Join(lines, "\n")
}
