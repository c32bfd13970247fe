package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"nixbus.dev/nixbus/pkg/natsauth"
)

// natsConfigCommand writes the NATS server's authorization for the bus's
// roles, and a secret per role for the services' --nats.* flags.
func natsConfigCommand(_ context.Context, args []string, stdout io.Writer, stderr io.Writer) error {
	fs := newFlagSet("nats-config", stderr)
	dir := fs.String("dir", "", "directory for auth.conf (the server's `include`) and one secret file per role (mode 0600; existing ones are kept)")
	kind := fs.String("auth", natsauth.Nkey, "credentials: nkey (a seed file per role) or password (a password file per role, bcrypt hashes in auth.conf)")
	roles := listFlag{}
	fs.Var(&roles, "role", "role to write (repeatable; default all: "+strings.Join(Roles(), ", ")+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *dir == "" {
		return fmt.Errorf("--dir must be set")
	}
	if len(roles) == 0 {
		roles = Roles()
	}
	for _, r := range roles {
		if _, ok := RolePermissions(r); !ok {
			return fmt.Errorf("unknown role %q (known: %s)", r, strings.Join(Roles(), ", "))
		}
	}
	users, err := natsauth.Generate(*dir, *kind, roles)
	if err != nil {
		return err
	}
	conf, err := natsauth.Config(users, RolePermissions)
	if err != nil {
		return err
	}
	path := filepath.Join(*dir, "auth.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Fprintf(stdout, "wrote %s: include it from nats-server.conf (`include auth.conf`, relative to that file)\n", path)
	for _, r := range roles {
		secret := natsauth.SecretFile(*dir, *kind, r)
		if *kind == natsauth.Password {
			fmt.Fprintf(stdout, "%s: --nats.user %s --nats.password-file %s\n", r, r, secret)
		} else {
			fmt.Fprintf(stdout, "%s: --nats.nkey-file %s\n", r, secret)
		}
	}
	return nil
}
