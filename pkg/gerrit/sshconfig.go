package gerrit

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/secret"
)

// DefaultPort is Gerrit's SSH port.
const DefaultPort = 29418

// SSHConfig says how to reach Gerrit's SSH port. The zero value means no
// Gerrit is configured.
type SSHConfig struct {
	// Address is host or host:port; the port defaults to 29418.
	Address string
	// User is the Gerrit account nixbus logs in as.
	User string
	// KeyFile is the account's private key (OpenSSH or PEM, unencrypted).
	KeyFile string
	// KnownHostsFile pins the server's host key; a host missing from it or
	// presenting another key is refused.
	KnownHostsFile string
	// DialTimeout bounds the TCP connect and the SSH handshake.
	DialTimeout time.Duration
	// KeepaliveInterval is how often an idle connection is probed, and
	// KeepaliveTimeout how long a probe may go unanswered before the
	// connection is declared dead and closed.
	KeepaliveInterval time.Duration
	KeepaliveTimeout  time.Duration
}

// RegisterFlags registers the fields as <prefix>address, <prefix>user, ...
// (for example prefix "gerrit.ssh.").
func (c *SSHConfig) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.Address, prefix+"address", "", "Gerrit SSH host[:port] (port 29418 by default); empty: no Gerrit")
	fs.StringVar(&c.User, prefix+"user", "", "Gerrit account to log in as")
	secret.FlagVar(fs, &c.KeyFile, prefix+"key-file", "gerrit-ssh-key", "private key file of the Gerrit account")
	secret.FlagVar(fs, &c.KnownHostsFile, prefix+"known-hosts-file", "gerrit-known-hosts", "known_hosts file holding Gerrit's host key")
	fs.DurationVar(&c.DialTimeout, prefix+"dial-timeout", 20*time.Second, "bound on connecting and the SSH handshake")
	fs.DurationVar(&c.KeepaliveInterval, prefix+"keepalive-interval", 15*time.Second, "how often an idle SSH connection is probed")
	fs.DurationVar(&c.KeepaliveTimeout, prefix+"keepalive-timeout", 45*time.Second, "how long a probe may go unanswered before reconnecting")
}

// Enabled reports whether a Gerrit is configured.
func (c SSHConfig) Enabled() bool { return c.Address != "" }

// Validate checks a configured Gerrit; a disabled one is valid.
func (c SSHConfig) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if _, _, err := c.HostPort(); err != nil {
		return err
	}
	if c.User == "" || c.KeyFile == "" || c.KnownHostsFile == "" {
		return errors.New("gerrit ssh: user, key file and known_hosts file are required")
	}
	if c.DialTimeout < 0 || c.KeepaliveInterval < 0 || c.KeepaliveTimeout < 0 {
		return errors.New("gerrit ssh: timeouts must not be negative")
	}
	return nil
}

func (c SSHConfig) withDefaults() SSHConfig {
	if c.DialTimeout <= 0 {
		c.DialTimeout = 20 * time.Second
	}
	if c.KeepaliveInterval <= 0 {
		c.KeepaliveInterval = 15 * time.Second
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = 3 * c.KeepaliveInterval
	}
	return c
}

// HostPort splits Address, defaulting the port.
func (c SSHConfig) HostPort() (string, int, error) {
	host, portStr, err := net.SplitHostPort(c.Address)
	if err != nil {
		// No port: the whole address is the host (IPv6 in brackets or not).
		host, portStr = strings.TrimSuffix(strings.TrimPrefix(c.Address, "["), "]"), ""
	}
	if host == "" || strings.HasPrefix(host, "-") || strings.ContainsAny(host, " \t\r\n/@'\"\\") {
		return "", 0, fmt.Errorf("gerrit ssh address %q: bad host", c.Address)
	}
	port := DefaultPort
	if portStr != "" {
		port, err = strconv.Atoi(portStr)
		if err != nil || port <= 0 || port > 65535 {
			return "", 0, fmt.Errorf("gerrit ssh address %q: bad port", c.Address)
		}
	}
	return host, port, nil
}

// addr is host:port as dialled, and as looked up in known_hosts.
func (c SSHConfig) addr() (string, error) {
	host, port, err := c.HostPort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// RepoURL is the ssh:// URL git fetches project from.
func (c SSHConfig) RepoURL(project string) string {
	host, port, err := c.HostPort()
	if err != nil {
		return ""
	}
	u := url.URL{Scheme: "ssh", Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/" + strings.TrimPrefix(project, "/")}
	if c.User != "" {
		u.User = url.User(c.User)
	}
	return u.String()
}
