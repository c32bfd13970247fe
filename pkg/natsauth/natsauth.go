// Package natsauth writes the NATS server side of the bus's least
// privilege: one user per role, identified by an nkey or a password, with
// the publish and subscribe permissions its service declares (bus.Access).
// Anything else, anonymous clients included, is refused.
package natsauth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"nixbus.dev/nixbus/pkg/bus"
)

// Kinds of credentials.
const (
	Nkey     = "nkey"
	Password = "password"
)

// User is one role's identity on the server.
type User struct {
	Role string
	// PublicNkey is the user's public nkey (U...), or
	PublicNkey string
	// PasswordHash, a bcrypt hash of its password.
	PasswordHash string
}

// SecretFile is where Generate keeps a role's secret in dir: its nkey seed
// (for --nats.nkey-file) or its password (for --nats.user=<role>
// --nats.password-file).
func SecretFile(dir, kind, role string) string {
	if kind == Password {
		return filepath.Join(dir, role+".password")
	}
	return filepath.Join(dir, role+".nk")
}

// Generate makes sure dir holds a secret of kind for every role, creating
// the missing ones (mode 0600; existing ones are kept, so the server's
// configuration can be generated again without handing out new secrets),
// and returns the users the server must know.
func Generate(dir, kind string, roles []string) ([]User, error) {
	if kind != Nkey && kind != Password {
		return nil, fmt.Errorf("unknown credential kind %q (want %s or %s)", kind, Nkey, Password)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	var users []User
	for _, role := range roles {
		// The caller checks roles are known; a name is a file name here.
		if role == "" || role == "." || role == ".." || strings.ContainsAny(role, `/\`) {
			return nil, fmt.Errorf("role %q cannot name a file", role)
		}
		path := SecretFile(dir, kind, role)
		secret, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			if secret, err = newSecret(kind); err != nil {
				return nil, err
			}
			if err := writeNew(path, secret); err != nil {
				return nil, err
			}
		} else if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		u := User{Role: role}
		if kind == Nkey {
			kp, err := nkeys.ParseDecoratedNKey(secret)
			if err != nil {
				return nil, fmt.Errorf("%s: not an nkey seed", path)
			}
			if u.PublicNkey, err = kp.PublicKey(); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if !nkeys.IsValidPublicUserKey(u.PublicNkey) {
				return nil, fmt.Errorf("%s: not a user nkey seed", path)
			}
			kp.Wipe()
		} else {
			pw := strings.TrimRight(string(secret), "\r\n")
			h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
			if err != nil {
				return nil, fmt.Errorf("hash password of %s: %w", role, err)
			}
			u.PasswordHash = string(h)
		}
		users = append(users, u)
	}
	return users, nil
}

func newSecret(kind string) ([]byte, error) {
	if kind == Password {
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("random password: %w", err)
		}
		return []byte(base64.RawURLEncoding.EncodeToString(b[:]) + "\n"), nil
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("create nkey: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("create nkey: %w", err)
	}
	return append(seed, '\n'), nil
}

func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Config is the server's authorization block for users, each with the
// permissions perms gives its role, to include from nats-server.conf
// (`include auth.conf`). It holds no secret: public nkeys or bcrypt hashes
// only.
func Config(users []User, perms func(role string) (bus.Permissions, bool)) (string, error) {
	var b strings.Builder
	b.WriteString("# The nixbus bus's users, one per role, written by `nixbus nats-config`.\n")
	b.WriteString("# Each may publish and subscribe to exactly what its service does; clients\n")
	b.WriteString("# that are none of them (anonymous ones too) are refused.\n")
	b.WriteString("authorization {\n  users: [\n")
	for _, u := range users {
		p, ok := perms(u.Role)
		if !ok {
			return "", fmt.Errorf("unknown role %q", u.Role)
		}
		fmt.Fprintf(&b, "    # %s\n    {\n", u.Role)
		switch {
		case u.PublicNkey != "":
			fmt.Fprintf(&b, "      nkey: %s\n", strconv.Quote(u.PublicNkey))
		case u.PasswordHash != "":
			fmt.Fprintf(&b, "      user: %s\n      password: %s\n", strconv.Quote(u.Role), strconv.Quote(u.PasswordHash))
		default:
			return "", fmt.Errorf("user of role %s has neither an nkey nor a password", u.Role)
		}
		b.WriteString("      permissions: {\n")
		list(&b, "publish", p.Publish)
		list(&b, "subscribe", p.Subscribe)
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String(), nil
}

func list(b *strings.Builder, name string, subjects []string) {
	fmt.Fprintf(b, "        %s: { allow: [\n", name)
	for _, s := range subjects {
		fmt.Fprintf(b, "          %s\n", strconv.Quote(s))
	}
	b.WriteString("        ] }\n")
}
