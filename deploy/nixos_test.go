// Package deploy tests what is in deploy/ and docker-compose.yml: the NixOS
// module (evaluated against the nixpkgs snapshot in ../shared/corpora) here,
// the composed system in compose_test.go (`make test-deploy`).
package deploy

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
)

// nixpkgsTarball is the corpora's nixpkgs snapshot (see its README), in
// $NIXBUS_CORPORA, else ../shared/corpora next to the repository or the
// work tree's shared folder; $NIXBUS_NIXPKGS names an unpacked tree instead.
const nixpkgsTarball = "nixpkgs-20.09pre-28fce08.tar.xz"

func corporaDirs() []string {
	dirs := []string{os.Getenv("NIXBUS_CORPORA"), "../../shared/corpora"}
	if out, err := exec.Command("git", "rev-parse", "--path-format=absolute", "--git-common-dir").Output(); err == nil {
		// The main checkout's neighbour, also from a linked worktree.
		dirs = append(dirs, filepath.Join(filepath.Dir(filepath.Dir(strings.TrimSpace(string(out)))), "shared", "corpora"))
	}
	return dirs
}

// unit is what deploy/nixos/test.nix returns for one systemd service.
type unit struct {
	After, Wants, Requires, WantedBy []string
	ServiceConfig                    map[string]any
	Text                             string
}

func nixpkgs(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("NIXBUS_NIXPKGS"); dir != "" {
		return dir
	}
	var tarball string
	for _, d := range corporaDirs() {
		if p := filepath.Join(d, nixpkgsTarball); d != "" && fileExists(p) {
			tarball, _ = filepath.Abs(p)
			break
		}
	}
	if tarball == "" {
		t.Skipf("no %s in %q; set NIXBUS_CORPORA, or NIXBUS_NIXPKGS to a nixpkgs tree", nixpkgsTarball, corporaDirs())
	}
	dir := t.TempDir()
	out, err := exec.CommandContext(t.Context(), "tar", "-xJf", tarball, "-C", dir).CombinedOutput()
	require.NoError(t, err, string(out))
	return filepath.Join(dir, "nixpkgs")
}

// unquote splits an ExecStart= line as systemd does for the quoting the
// module writes: double-quoted words with \\ and \" escapes, %% and $$.
func unquote(t *testing.T, line string) []string {
	t.Helper()
	var args []string
	for rest := strings.TrimSpace(line); rest != ""; rest = strings.TrimLeft(rest, " ") {
		require.True(t, strings.HasPrefix(rest, `"`), "unquoted word in %q", line)
		var b strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			switch c := rest[i]; {
			case c == '\\' && i+1 < len(rest) && rest[i+1] == 'n':
				i++
				b.WriteByte('\n')
			case c == '\\' && i+1 < len(rest):
				i++
				b.WriteByte(rest[i])
			case (c == '%' || c == '$') && i+1 < len(rest) && rest[i+1] == c:
				i++
				b.WriteByte(c)
			default:
				b.WriteByte(c)
			}
		}
		require.Less(t, i, len(rest), "unterminated quote in %q", line)
		args = append(args, b.String())
		rest = rest[i+1:]
	}
	return args
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// TestNixOSModule evaluates deploy/nixos/test.nix, a NixOS configuration
// with every service, three builders on two systems, Gerrit, NATS
// credentials and tracing, and checks the systemd units it makes.
func TestNixOSModule(t *testing.T) {
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Skip("nix-instantiate not installed (make setup)")
	}
	t.Parallel()
	pkgs := nixpkgs(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nix-instantiate", "--eval", "--strict", "--json",
		"--option", "substituters", "", "--arg", "nixpkgs", pkgs, "nixos/test.nix")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	var got struct {
		TrustedUsers []string
		CacheUser    bool
		Units        map[string]unit
	}
	require.NoError(t, json.Unmarshal(out, &got))

	roles := map[string]string{
		"nixbus-gerrit-ingest": "gerrit-ingest", "nixbus-evaluator": "evaluator", "nixbus-planner": "planner",
		"nixbus-cache-uploader": "cache-uploader", "nixbus-reporter": "reporter",
		"nixbus-builder-x86_64-linux-1": "builder", "nixbus-builder-x86_64-linux-2": "builder",
		"nixbus-builder-aarch64-linux-1": "builder",
	}
	require.ElementsMatch(t, keys(roles), keys(got.Units), "one unit per service and per builder")
	gerritCreds := []string{"gerrit-ssh-key:/var/lib/nixbus-secrets/id_ed25519", "gerrit-known-hosts:/var/lib/nixbus-secrets/known_hosts"}
	wantCreds := map[string][]string{
		"nixbus-gerrit-ingest":  gerritCreds,
		"nixbus-evaluator":      gerritCreds,
		"nixbus-reporter":       gerritCreds,
		"nixbus-cache-uploader": {"cache-signing-key:/var/lib/nixbus-secrets/cache.sec"},
	}
	usesNix := map[string]bool{"evaluator": true, "builder": true, "cache-uploader": true}
	stateDirs := map[string]bool{}

	for name, role := range roles {
		t.Run(name, func(t *testing.T) {
			u := got.Units[name]
			sc := u.ServiceConfig
			var execStart string
			for _, line := range strings.Split(u.Text, "\n") {
				if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
					require.Empty(t, execStart, "one ExecStart")
					execStart = v
				}
			}
			argv := unquote(t, execStart)
			require.GreaterOrEqual(t, len(argv), 2)
			require.True(t, strings.HasSuffix(argv[0], "-nixbus-0.0.0/bin/nixbus"), argv[0])
			require.Equal(t, role, argv[1])

			// Every flag is one nixbus has, and the values are what the
			// configuration says.
			fs := flag.NewFlagSet(name, flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var o app.Options
			var c app.Configs
			o.RegisterFlags(fs)
			c.RegisterFlags(fs)
			require.NoError(t, fs.Parse(argv[2:]), "flags of %s", name)
			require.Empty(t, fs.Args())
			flags := map[string]string{}
			fs.Visit(func(f *flag.Flag) { flags[f.Name] = f.Value.String() })
			require.Equal(t, "nats://nats1.example.org:4222,nats://nats2.example.org:4222", flags["nats.url"])
			require.Equal(t, "http://127.0.0.1:4318", flags["otel.endpoint"])
			require.False(t, stateDirs[flags["state-dir"]], "state dir %s shared", flags["state-dir"])
			stateDirs[flags["state-dir"]] = true

			// Secrets: only as credentials, each unit its own role's NATS
			// secret, found in $CREDENTIALS_DIRECTORY (%d); no secret path
			// in argv.
			creds := asStrings(t, sc["LoadCredential"])
			require.ElementsMatch(t, append([]string{"nats-nkey:/var/lib/nixbus-secrets/nats/" + role + ".nk"}, wantCreds[name]...), creds)
			require.Equal(t, "%d/nats-nkey", flags["nats.nkey-file"])
			require.NotContains(t, execStart, "/var/lib/nixbus-secrets")
			for _, cr := range creds {
				require.Contains(t, u.Text, "LoadCredential="+cr+"\n")
			}
			if slices.Contains(wantCreds[name], gerritCreds[0]) {
				require.Equal(t, "%d/gerrit-ssh-key", flags["gerrit.ssh.key-file"])
				require.Equal(t, "%d/gerrit-known-hosts", flags["gerrit.ssh.known-hosts-file"])
				require.Equal(t, "review.example.org:29418", flags["gerrit.ssh.address"])
			} else {
				require.NotContains(t, flags, "gerrit.ssh.address", "no Gerrit access where none is needed")
			}

			// Ordering: after the network and NATS; Nix users need the daemon.
			require.Contains(t, u.After, "nats.service")
			require.Contains(t, u.Wants, "nats.service")
			require.Contains(t, u.After, "network-online.target")
			require.Equal(t, []string{"multi-user.target"}, u.WantedBy)
			if usesNix[role] {
				require.Contains(t, u.After, "nix-daemon.socket")
				require.Contains(t, u.Requires, "nix-daemon.socket")
				require.Contains(t, u.Text, "NIX_REMOTE=daemon")
			} else {
				require.NotContains(t, u.After, "nix-daemon.socket")
				require.Equal(t, true, sc["MemoryDenyWriteExecute"])
			}

			// Restarts and hardening.
			require.Equal(t, "always", sc["Restart"])
			require.Equal(t, "strict", sc["ProtectSystem"])
			require.Equal(t, true, sc["NoNewPrivileges"])
			require.Equal(t, true, sc["PrivateTmp"])
			require.Equal(t, "", sc["CapabilityBoundingSet"])
			if role == "cache-uploader" {
				require.Equal(t, false, sc["DynamicUser"], "signing needs a trusted user")
				require.Equal(t, "nixbus-cache", sc["User"])
			} else {
				require.Equal(t, true, sc["DynamicUser"])
			}

			switch name {
			case "nixbus-builder-x86_64-linux-1", "nixbus-builder-x86_64-linux-2":
				require.Equal(t, "x86_64-linux", flags["builder.system"])
				require.Equal(t, "", flags["http.address"], "builders serve no port")
				require.NotContains(t, flags, "builder.remote-only")
			case "nixbus-builder-aarch64-linux-1":
				require.Equal(t, "aarch64-linux", flags["builder.system"])
				require.Equal(t, "true", flags["builder.remote-only"])
			case "nixbus-reporter":
				require.Equal(t, "true", flags["reporter.started-message"])
				require.Equal(t, "https://ci.example.org/logs", flags["reporter.log-base-url"])
			case "nixbus-gerrit-ingest":
				require.Equal(t, "lix", flags["gerrit-ingest.projects"])
			}
		})
	}
	require.Contains(t, got.TrustedUsers, "nixbus-cache")
	require.Contains(t, got.TrustedUsers, "root")
	require.True(t, got.CacheUser)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func asStrings(t *testing.T, v any) []string {
	t.Helper()
	list, ok := v.([]any)
	require.True(t, ok, "%v is not a list", v)
	var out []string
	for _, e := range list {
		s, ok := e.(string)
		require.True(t, ok)
		out = append(out, s)
	}
	return out
}
