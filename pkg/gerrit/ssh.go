// Package gerrit is how nixbus talks to Gerrit: an SSH client that pins the
// server's host key from a known_hosts file and keeps the connection alive,
// and reviewers that vote on a patchset over SSH (`gerrit review`) or REST.
// gerrit-ingest, the evaluator's fetcher and the reporter share it.
package gerrit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

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

// Client is an SSH connection to Gerrit, kept alive until Close.
type Client struct {
	conn *ssh.Client
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu  sync.Mutex
	err error // why the connection died, if we killed it
}

// Dial connects and authenticates to Gerrit, verifying its host key.
func Dial(ctx context.Context, cfg SSHConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("gerrit ssh: no address configured")
	}
	cfg = cfg.withDefaults()
	addr, err := cfg.addr()
	if err != nil {
		return nil, err
	}
	cc, err := clientConfig(cfg, addr)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: cfg.KeepaliveInterval}
	tcp, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to gerrit %s: %w", addr, err)
	}
	// The handshake is bounded by the dial timeout and by ctx.
	if err := tcp.SetDeadline(time.Now().Add(cfg.DialTimeout)); err != nil {
		return nil, errors.Join(fmt.Errorf("connect to gerrit %s: %w", addr, err), tcp.Close())
	}
	stopWatch := context.AfterFunc(ctx, func() { _ = tcp.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(tcp, addr, cc)
	stopped := stopWatch()
	if err != nil {
		_ = tcp.Close()
		if !stopped && ctx.Err() != nil {
			return nil, fmt.Errorf("connect to gerrit %s: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("ssh handshake with gerrit %s: %w", addr, err)
	}
	if !stopped {
		return nil, errors.Join(fmt.Errorf("connect to gerrit %s: %w", addr, ctx.Err()), sc.Close())
	}
	if err := tcp.SetDeadline(time.Time{}); err != nil {
		return nil, errors.Join(fmt.Errorf("connect to gerrit %s: %w", addr, err), sc.Close())
	}
	c := &Client{conn: ssh.NewClient(sc, chans, reqs), stop: make(chan struct{})}
	c.wg.Add(1)
	go c.keepalive(cfg.KeepaliveInterval, cfg.KeepaliveTimeout)
	return c, nil
}

func clientConfig(cfg SSHConfig, addr string) (*ssh.ClientConfig, error) {
	pem, err := secret.Read(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("read gerrit ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return nil, fmt.Errorf("parse gerrit ssh key %s: %w", cfg.KeyFile, err)
	}
	verify, algos, err := HostKeyCallback(cfg.KnownHostsFile, addr)
	if err != nil {
		return nil, err
	}
	return &ssh.ClientConfig{
		User:              cfg.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   verify,
		HostKeyAlgorithms: algos,
		Timeout:           cfg.DialTimeout,
		ClientVersion:     "SSH-2.0-nixbus",
	}, nil
}

// HostKeyCallback verifies host keys against knownHostsFile, with errors
// that name the host and the file. It also returns the host key algorithms
// to offer for addr: those of the keys the file pins for it, so a server
// with several host keys presents one the file knows.
func HostKeyCallback(knownHostsFile, addr string) (ssh.HostKeyCallback, []string, error) {
	if err := secret.CheckTrusted(knownHostsFile); err != nil {
		return nil, nil, fmt.Errorf("read gerrit known_hosts: %w", err)
	}
	check, err := knownhosts.New(knownHostsFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read gerrit known_hosts: %w", err)
	}
	verify := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return fmt.Errorf("gerrit host %s is not in known_hosts file %s (it offered %s key %s); refusing to connect",
				knownhosts.Normalize(hostname), knownHostsFile, key.Type(), ssh.FingerprintSHA256(key))
		case errors.As(err, &ke):
			return fmt.Errorf("gerrit host key mismatch for %s: it offered %s key %s, known_hosts file %s pins %s; refusing to connect",
				knownhosts.Normalize(hostname), key.Type(), ssh.FingerprintSHA256(key), knownHostsFile, describeKnown(ke.Want))
		default:
			return fmt.Errorf("verify gerrit host key of %s against %s: %w", knownhosts.Normalize(hostname), knownHostsFile, err)
		}
	}
	return verify, knownAlgorithms(check, addr), nil
}

func describeKnown(keys []knownhosts.KnownKey) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s key %s (%s:%d)", k.Key.Type(), ssh.FingerprintSHA256(k.Key), k.Filename, k.Line)
	}
	return strings.Join(parts, ", ")
}

// knownAlgorithms asks the known_hosts checker which keys it holds for addr
// by showing it a throwaway key: the mismatch error lists them.
func knownAlgorithms(check ssh.HostKeyCallback, addr string) []string {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil
	}
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		tcp = &net.TCPAddr{}
	}
	var ke *knownhosts.KeyError
	if err := check(addr, tcp, probe.PublicKey()); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

// keepalive probes the server; an unanswered probe closes the connection,
// which ends every session on it so the caller reconnects.
func (c *Client) keepalive(interval, timeout time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		res := make(chan error, 1)
		go func() {
			_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
			res <- err
		}()
		timer := time.NewTimer(timeout)
		select {
		case err := <-res:
			timer.Stop()
			if err != nil {
				c.fail(fmt.Errorf("ssh keepalive: %w", err))
				return
			}
		case <-timer.C:
			c.fail(fmt.Errorf("ssh keepalive: no answer from gerrit in %s", timeout))
			<-res
			return
		case <-c.stop:
			timer.Stop()
			<-res // Close has closed the connection, so the request returns.
			return
		}
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	_ = c.conn.Close()
}

// Err says why the connection was closed by the keepalive, if it was.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection and waits for the keepalive to stop.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		close(c.stop)
		err = c.conn.Close()
		c.wg.Wait()
		if errors.Is(err, net.ErrClosed) || c.Err() != nil {
			err = nil
		}
	})
	return err
}

// Done is closed when the connection ends.
func (c *Client) Done() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		_ = c.conn.Wait()
		close(done)
	}()
	return done
}

// ExitError is a remote command that failed.
type ExitError struct {
	Command string
	Status  int
	Stderr  string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("%s: exit status %d: %s", commandName(e.Command), e.Status, strings.TrimSpace(e.Stderr))
}

// commandName is the command without its arguments: "gerrit review".
func commandName(command string) string {
	f := strings.Fields(command)
	switch {
	case len(f) >= 2 && f[0] == "gerrit":
		return f[0] + " " + f[1]
	case len(f) >= 1:
		return f[0]
	}
	return "command"
}

// Run runs command on Gerrit and returns its standard output.
func (c *Client) Run(ctx context.Context, command string) ([]byte, error) {
	sess, err := c.conn.NewSession()
	if err != nil {
		return nil, fmt.Errorf("open ssh session: %w", err)
	}
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	stopWatch := context.AfterFunc(ctx, func() { _ = sess.Close() })
	err = sess.Run(command)
	if !stopWatch() && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if cerr := sess.Close(); cerr != nil && !errors.Is(cerr, io.EOF) && err == nil {
		err = cerr
	}
	var xe *ssh.ExitError
	if errors.As(err, &xe) {
		return stdout.Bytes(), &ExitError{Command: command, Status: xe.ExitStatus(), Stderr: stderr.String()}
	}
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("run on gerrit: %w", err)
	}
	return stdout.Bytes(), nil
}

// Stream starts command and returns its standard output, which ends when
// the command or the connection does.
func (c *Client) Stream(command string) (*Stream, error) {
	sess, err := c.conn.NewSession()
	if err != nil {
		return nil, fmt.Errorf("open ssh session: %w", err)
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("ssh stdout: %w", err), sess.Close())
	}
	st := &Stream{Reader: out, sess: sess, command: command}
	sess.Stderr = &st.stderr
	if err := sess.Start(command); err != nil {
		return nil, errors.Join(fmt.Errorf("start %s: %w", commandName(command), err), sess.Close())
	}
	return st, nil
}

// Stream is a running remote command's standard output.
type Stream struct {
	io.Reader
	sess    *ssh.Session
	command string
	stderr  limitedBuffer
}

// Wait waits for the command to end, once its output was read to the end,
// and says how it ended.
func (s *Stream) Wait() error {
	err := s.sess.Wait()
	var xe *ssh.ExitError
	if errors.As(err, &xe) {
		return &ExitError{Command: s.command, Status: xe.ExitStatus(), Stderr: s.stderr.String()}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", commandName(s.command), err)
	}
	return nil
}

// Close ends the session.
func (s *Stream) Close() error {
	if err := s.sess.Close(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("close ssh session: %w", err)
	}
	return nil
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 64<<10 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
