package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// NATSAuth is how this process proves who it is to an external NATS
// server, and how it checks the server: every secret is a file (never a
// flag's value, an environment variable or part of the URL).
type NATSAuth struct {
	// CredsFile is a JWT + nkey seed .creds file (decentralized auth).
	CredsFile string
	// NkeyFile holds an nkey seed (`nixbus nats-config` writes one per role).
	NkeyFile string
	// User and PasswordFile: user/password authentication.
	User         string
	PasswordFile string
	// TLS: the CA that signed the server's certificate, and this client's
	// certificate and key for mutual TLS.
	TLSCA, TLSCert, TLSKey string
}

func (a *NATSAuth) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.CredsFile, "nats.creds", "", "file with this service's NATS credentials (JWT and nkey seed)")
	fs.StringVar(&a.NkeyFile, "nats.nkey-file", "", "file with this service's NATS nkey seed (see `nixbus nats-config`)")
	fs.StringVar(&a.User, "nats.user", "", "NATS user name (its password comes from --nats.password-file)")
	fs.StringVar(&a.PasswordFile, "nats.password-file", "", "file with the password of --nats.user")
	fs.StringVar(&a.TLSCA, "nats.tls.ca", "", "CA certificate file the NATS server's certificate must chain to")
	fs.StringVar(&a.TLSCert, "nats.tls.cert", "", "client certificate file for mutual TLS with NATS")
	fs.StringVar(&a.TLSKey, "nats.tls.key", "", "client key file for --nats.tls.cert")
}

func (a *NATSAuth) set() bool { return *a != NATSAuth{} }

func (a *NATSAuth) validate(natsURL string) error {
	if !a.set() {
		return nil
	}
	if natsURL == "" {
		return errors.New("--nats.creds, --nats.nkey-file, --nats.user and --nats.tls.* are for an external NATS (--nats.url)")
	}
	n := 0
	for _, f := range []string{a.CredsFile, a.NkeyFile, a.User} {
		if f != "" {
			n++
		}
	}
	if n > 1 {
		return errors.New("use one of --nats.creds, --nats.nkey-file and --nats.user")
	}
	if (a.User == "") != (a.PasswordFile == "") {
		return errors.New("--nats.user and --nats.password-file go together")
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		return errors.New("--nats.tls.cert and --nats.tls.key go together")
	}
	for _, p := range []string{a.CredsFile, a.NkeyFile, a.PasswordFile, a.TLSKey} {
		if p != "" {
			if _, err := readSecret(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// options are the connection options a.
func (a *NATSAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.NkeyFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("--nats.nkey-file: %w", err)
		}
		opts = append(opts, o)
	case a.User != "":
		pw, err := readSecret(a.PasswordFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(a.User, strings.TrimRight(string(pw), "\r\n")))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return opts, nil
}

// checkNATSURL refuses credentials in the URL: they would show in argv,
// the environment of every child process, and logs.
func checkNATSURL(raw string) error {
	for _, one := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil {
			return errors.New("--nats.url: not a URL") // the error could quote a password
		}
		if u.User != nil {
			return errors.New("--nats.url holds credentials: use --nats.creds, --nats.nkey-file or --nats.user with --nats.password-file")
		}
	}
	return nil
}

// readSecret reads a secret file that only its owner may access.
// TODO(nats-secure): switch to pkg/secret once it lands.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, errors.Unwrap(err))
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("permissions %04o for %s are too open: a secret must not be accessible by group or others; fix with: chmod go-rwx %s", st.Mode().Perm(), path, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}
