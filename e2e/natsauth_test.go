package e2e

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/changeevent"
	"nixbus.dev/nixbus/pkg/natsauth"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// startSecured writes the bus's users with `nixbus nats-config` and starts
// a real server that includes them, as an operator would.
func startSecured(t *testing.T, kind string) (*natstest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	code, out, errOut := mainOut(t, "nats-config", "--dir", dir, "--auth", kind)
	require.Equal(t, 0, code, out+errOut)
	conf := filepath.Join(dir, "nats-server.conf")
	require.NoError(t, os.WriteFile(conf, []byte("include auth.conf\n"), 0o644))
	return natstest.StartConfig(t, conf), dir
}

// asRole connects as role with the secret nats-config wrote, using the
// role's inbox as its services do. Permission errors the server sends back
// arrive on the returned channel.
func asRole(t *testing.T, srv *natstest.Server, dir, role string) (*nats.Conn, jetstream.JetStream, <-chan error) {
	t.Helper()
	return asRoleWith(t, srv, dir, natsauth.Nkey, role)
}

// asRoleWith is asRole with the kind of secret nats-config wrote.
func asRoleWith(t *testing.T, srv *natstest.Server, dir, kind, role string) (*nats.Conn, jetstream.JetStream, <-chan error) {
	t.Helper()
	var auth nats.Option
	if kind == natsauth.Nkey {
		var err error
		auth, err = nats.NkeyOptionFromSeed(natsauth.SecretFile(dir, natsauth.Nkey, role))
		require.NoError(t, err)
	} else {
		pw, err := os.ReadFile(natsauth.SecretFile(dir, natsauth.Password, role))
		require.NoError(t, err)
		auth = nats.UserInfo(role, strings.TrimSpace(string(pw)))
	}
	errs := make(chan error, 16)
	nc, js := srv.Connect(t, auth, nats.CustomInboxPrefix(bus.InboxPrefix(role)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	return nc, js, errs
}

// TestLeastPrivilegeRefusesForbiddenPublishes proves against a real server
// configured by `nixbus nats-config` that a role cannot publish what
// another role does, and that an anonymous client cannot connect.
func TestLeastPrivilegeRefusesForbiddenPublishes(t *testing.T) {
	srv, dir := startSecured(t, natsauth.Nkey)
	_, admin, _ := asRole(t, srv, dir, bus.RoleAdmin)
	require.NoError(t, bus.EnsureStreams(t.Context(), admin, bus.StreamOptions{}))

	_, err := nats.Connect(srv.URL, nats.NoReconnect())
	require.ErrorIs(t, err, nats.ErrAuthorization, "anonymous client")
	_, err = nats.Connect(srv.URL, nats.NoReconnect(), nats.UserInfo("builder", "guess"))
	require.ErrorIs(t, err, nats.ErrAuthorization, "wrong password")

	forbidden := []struct {
		role, subject, stream string
	}{
		{"builder", bus.VerdictSubject("r1"), bus.StreamReports},
		{"builder", bus.ChangeSubject("p"), bus.StreamChanges},
		{"builder", bus.BuildSubject("x86_64-linux"), bus.StreamBuilds},
		{"builder", bus.OutcomeSubject("r1"), bus.StreamReports},
		{"builder", bus.RunSubject("r1", bus.RunJobKind), bus.StreamRuns},
		{"evaluator", bus.RunSubject("r1", bus.RunResultKind), bus.StreamRuns},
		{"evaluator", bus.VerdictSubject("r1"), bus.StreamReports},
		{"cache-uploader", bus.RunSubject("r1", bus.RunResultKind), bus.StreamRuns},
		{"gerrit-ingest", bus.BuildSubject("x86_64-linux"), bus.StreamBuilds},
		{"reporter", bus.VerdictSubject("r1"), bus.StreamReports},
		{"planner", bus.RunSubject("r1", bus.RunResultKind), bus.StreamRuns},
		{"planner", bus.ReviewSubject("r1"), bus.StreamReports},
		// Only the admin owns stream settings.
		{"builder", "$JS.API.STREAM.UPDATE." + bus.StreamRuns, ""},
		{"planner", "$JS.API.STREAM.DELETE." + bus.StreamRuns, ""},
	}
	for _, f := range forbidden {
		t.Run(f.role+"/"+f.subject, func(t *testing.T) {
			nc, _, errs := asRole(t, srv, dir, f.role)
			require.NoError(t, nc.Publish(f.subject, []byte("forged")))
			require.NoError(t, nc.Flush())
			select {
			case err := <-errs:
				require.ErrorIs(t, err, nats.ErrPermissionViolation)
				require.Contains(t, err.Error(), f.subject)
			case <-t.Context().Done():
				t.Fatal("no permission violation")
			}
			if f.stream != "" {
				n, err := natstest.Stored(t.Context(), admin, f.stream, f.subject)
				require.NoError(t, err)
				require.Zero(t, n, "the forged message was stored")
			}
		})
	}

	// Nor may a role read another's replies or snoop on every subject.
	for _, sub := range []string{"_INBOX.>", bus.InboxPrefix("reporter") + ".>", bus.VerdictAll, ">"} {
		nc, _, errs := asRole(t, srv, dir, "builder")
		_, err := nc.SubscribeSync(sub)
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		err = <-errs
		require.ErrorIs(t, err, nats.ErrPermissionViolation, sub)
	}
}

// TestLeastPrivilegeRun runs the example flake with every service in its
// own instance on its own role's user: the run completes with no
// permission violation anywhere.
func TestLeastPrivilegeRun(t *testing.T) {
	for _, kind := range []string{natsauth.Nkey, natsauth.Password} {
		t.Run(kind, func(t *testing.T) {
			if kind == natsauth.Password && testing.Short() {
				t.Skip("one kind is enough in -short")
			}
			srv, dir := startSecured(t, kind)
			state := t.TempDir()
			ctx, cancel := context.WithCancel(t.Context())
			var insts []*app.Instance
			for _, name := range app.Names() {
				args := []string{"--nats.url", srv.URL, "--state-dir", state, "--nix.option", "substituters=", "--http.address", "127.0.0.1:0"}
				if kind == natsauth.Nkey {
					args = append(args, "--nats.nkey-file", natsauth.SecretFile(dir, kind, name))
				} else {
					args = append(args, "--nats.user", name, "--nats.password-file", natsauth.SecretFile(dir, kind, name))
				}
				var o app.Options
				fs := newFlagSet()
				o.RegisterFlags(fs)
				require.NoError(t, fs.Parse(args))
				require.NoError(t, o.Services.Set(name))
				inst, err := app.Start(ctx, o, testConfigs(t), io.Discard, logger(t))
				require.NoError(t, err, name)
				insts = append(insts, inst)
			}
			t.Cleanup(func() {
				cancel()
				for _, inst := range insts {
					require.NoError(t, inst.Wait())
				}
			})
			_, js, _ := asRoleWith(t, srv, dir, kind, bus.RoleAdmin)
			fctx, fcancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer fcancel()
			var out strings.Builder
			ev, err := changeevent.Manual(changeevent.Options{LocalPath: saltedExample(t)})
			require.NoError(t, err)
			res, err := app.Follow(fctx, js, ev, &out, logger(t))
			require.NoError(t, err, "%s\nserver errors: %q", out.String(), srv.Errors())
			require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_FAILED, res.Verdict.GetStatus())
			require.EqualValues(t, 8, res.Verdict.GetJobCount())
			require.EqualValues(t, 5, res.Verdict.GetSucceededCount())
			require.Len(t, res.Uploads, 5)
			require.Equal(t, int32(-1), res.Review.GetVerified())
			// What the metrics and /readyz ask JetStream is the role's too.
			seen := map[string]bool{}
			for _, inst := range insts {
				series, _ := scrape(t.Context(), t, inst)
				for s, v := range series {
					name, _, _ := strings.Cut(s, "{")
					seen[name] = true
					if name == "nixbus_jetstream_consumer_up" {
						require.Equal(t, 1.0, v, s)
					}
				}
				code, body := httpGet(t.Context(), t, "http://"+inst.HTTPAddr+"/readyz")
				require.Equal(t, 200, code, body)
			}
			for _, name := range []string{"nixbus_jetstream_consumer_up", "nixbus_planner_builds_queued", "nixbus_evaluator_evaluations_queued"} {
				require.True(t, seen[name], "%s answered", name)
			}
			require.Empty(t, srv.Errors(), "the server refused something a service does")
		})
	}
}

// TestSecretFlagsRefuseOpenFiles: a secret readable by others is refused
// before anything connects, and credentials in the URL are refused.
func TestSecretFlagsRefuseOpenFiles(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "builder.nk")
	require.NoError(t, os.WriteFile(open, []byte("SU..."), 0o644))
	for _, args := range [][]string{
		{"--nats.url", "nats://127.0.0.1:1", "--nats.nkey-file", open},
		{"--nats.url", "nats://127.0.0.1:1", "--nats.user", "builder", "--nats.password-file", open},
		{"--nats.url", "nats://builder:hunter2@127.0.0.1:1"},
		{"--nats.nkey-file", open}, // no external NATS
	} {
		var o app.Options
		fs := newFlagSet()
		o.RegisterFlags(fs)
		require.NoError(t, fs.Parse(append(args, "--state-dir", dir)))
		err := o.Validate()
		require.Error(t, err, args)
		require.NotContains(t, err.Error(), "hunter2")
	}
}

// TestNATSCredentialFromSystemd: under systemd's LoadCredential=, the
// NATS nkey is found by name in $CREDENTIALS_DIRECTORY.
func TestNATSCredentialFromSystemd(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nats-nkey"), []byte("SU..."), 0o600))
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	var o app.Options
	fs := newFlagSet()
	o.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"--nats.url", "nats://127.0.0.1:1"}))
	require.Equal(t, filepath.Join(dir, "nats-nkey"), o.NATSAuth.NkeyFile)
}

// TestEveryServiceHasARole: a new service gets its own user, or it could
// not run on a secured bus.
func TestEveryServiceHasARole(t *testing.T) {
	for _, name := range app.Names() {
		_, ok := app.RolePermissions(name)
		require.True(t, ok, "service %s has no role (its Access, in internal/app's registry)", name)
		require.Contains(t, app.Roles(), name)
	}
}
