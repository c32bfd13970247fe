// Package gerrit is how nixbus talks to Gerrit: an SSH client that pins the
// server's host key from a known_hosts file and keeps the connection alive,
// and reviewers that vote on a patchset over SSH (`gerrit review`) or REST.
// gerrit-ingest, the evaluator's fetcher and the reporter share it.
package gerrit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"nixbus.dev/nixbus/pkg/secret"
)

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
