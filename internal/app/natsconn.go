package app

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"

	"nixbus.dev/nixbus/pkg/secret"
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
	secret.FlagVar(fs, &a.CredsFile, "nats.creds", "nats-creds", "file with this service's NATS credentials (JWT and nkey seed)")
	secret.FlagVar(fs, &a.NkeyFile, "nats.nkey-file", "nats-nkey", "file with this service's NATS nkey seed (see `nixbus nats-config`)")
	fs.StringVar(&a.User, "nats.user", "", "NATS user name (its password comes from --nats.password-file)")
	secret.FlagVar(fs, &a.PasswordFile, "nats.password-file", "nats-password", "file with the password of --nats.user")
	fs.StringVar(&a.TLSCA, "nats.tls.ca", "", "CA certificate file the NATS server's certificate must chain to")
	fs.StringVar(&a.TLSCert, "nats.tls.cert", "", "client certificate file for mutual TLS with NATS")
	secret.FlagVar(fs, &a.TLSKey, "nats.tls.key", "nats-tls-key", "client key file for --nats.tls.cert")
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
			if err := secret.Check(p); err != nil {
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
		pw, err := secret.ReadString(a.PasswordFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(a.User, pw))
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
