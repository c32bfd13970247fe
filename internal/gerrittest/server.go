// Package gerrittest is a Gerrit for tests that speaks the protocol nixbus
// uses: an SSH server (golang.org/x/crypto/ssh on 127.0.0.1) that accepts
// one client key, serves `gerrit stream-events` from events the test
// pushes, serves `git-upload-pack` from real git repositories, and records
// every `gerrit review` command verbatim; plus an http.Handler for the REST
// review endpoint (see REST).
//
// A typical end-to-end test:
//
//	srv := gerrittest.Start(t, gerrittest.Options{})
//	repo := srv.CreateProject(t, "nixbus")
//	src := gerrittest.CopyDir(t, "../examples/flake") // add a salt.txt
//	srv.Push(repo.UploadPatchset(t, 1, 1, src))
//	// run nixbus with srv.SSHConfig() (Addr, User, ClientKeyFile, KnownHostsFile)
//	r := srv.WaitReviews(t, 1)[0] // r.Labels["Verified"], r.Message
//
// Stream sessions behave like Gerrit with an events log: a session starts
// with the first event no earlier session delivered, so an event pushed
// while nobody listens is not lost (tests need not race the connect), and
// Options.Resend re-sends already delivered events to a new session to
// prove the client drops duplicates.
package gerrittest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"nixbus.dev/nixbus/pkg/gerrit"
)

// Options configure a Server; the zero value is fine.
type Options struct {
	// User is the account accepted ("nixbus" by default).
	User string
	// Resend is how many already delivered events each stream session
	// after the first repeats before the new ones.
	Resend int
}

// Server is a running test Gerrit.
type Server struct {
	// Addr is 127.0.0.1:<port>.
	Addr string
	User string
	// ClientKeyFile is the private key the server accepts, KnownHostsFile
	// pins the server's host key: together, what a client needs.
	ClientKeyFile  string
	KnownHostsFile string
	HostKey        ssh.Signer

	opts      Options
	ln        net.Listener
	config    *ssh.ServerConfig
	clientKey ssh.PublicKey
	done      chan struct{}
	wg        sync.WaitGroup

	mu             sync.Mutex
	events         []pushed
	delivered      int
	changed        chan struct{}
	conns          map[*conn]struct{}
	streamsStarted int
	streamsActive  int
	dropMid        bool
	loseAnswers    int // reviews applied whose connection then dies
	failReviews    int
	reviews        []ReviewCommand
	commands       []string
	authFailures   int
	repos          map[string]string
}

type pushed struct {
	line string
	typ  string
}

type conn struct {
	sc      *ssh.ServerConn
	closed  chan struct{}
	mu      sync.Mutex
	stalled bool
}

func (c *conn) isStalled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stalled
}

// Start runs a server until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.User == "" {
		o.User = "nixbus"
	}
	keyFile, clientKey := NewClientKey(t)
	s := &Server{
		User: o.User, ClientKeyFile: keyFile, HostKey: NewSigner(t),
		opts: o, clientKey: clientKey, done: make(chan struct{}), changed: make(chan struct{}),
		conns: map[*conn]struct{}{}, repos: map[string]string{},
	}
	s.config = &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-GerritCodeReview_3.10.0 (APACHE-SSHD-2.12.0)",
		PublicKeyCallback: func(md ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if md.User() == s.User && bytes.Equal(key.Marshal(), s.clientKey.Marshal()) {
				return &ssh.Permissions{}, nil
			}
			s.mu.Lock()
			s.authFailures++
			s.mu.Unlock()
			return nil, fmt.Errorf("key of %s is not authorized", md.User())
		},
	}
	s.config.AddHostKey(s.HostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("gerrittest listen: %v", err)
	}
	s.ln, s.Addr = ln, ln.Addr().String()
	s.KnownHostsFile = WriteKnownHosts(t, s.Addr, s.HostKey.PublicKey())
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

// SSHConfig is a client configuration for this server, with keepalives
// short enough for tests.
func (s *Server) SSHConfig() gerrit.SSHConfig {
	return gerrit.SSHConfig{
		Address: s.Addr, User: s.User, KeyFile: s.ClientKeyFile, KnownHostsFile: s.KnownHostsFile,
		DialTimeout: 5 * time.Second, KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: time.Second,
	}
}

// RepoURL is the ssh:// URL of project on this server.
func (s *Server) RepoURL(project string) string { return s.SSHConfig().RepoURL(project) }

func (s *Server) close() {
	close(s.done)
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.sc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.serve(nc)
	}
}

func (s *Server) serve(nc net.Conn) {
	defer s.wg.Done()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	sc, chans, reqs, err := ssh.NewServerConn(nc, s.config)
	if err != nil {
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	c := &conn{sc: sc, closed: make(chan struct{})}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		_ = sc.Close()
		return
	default:
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for req := range reqs {
			// Keepalives get OpenSSH's answer (a failure reply), unless
			// the test stalled this connection: then nothing comes back.
			if req.WantReply && !c.isStalled() {
				_ = req.Reply(false, nil)
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sessions sync.WaitGroup
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			s.session(ctx, c, ch, creqs)
		}()
	}
	close(c.closed)
	cancel()
	_ = sc.Close()
	sessions.Wait()
}

// session serves one channel: env requests, then one exec.
func (s *Server) session(ctx context.Context, c *conn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	gone := make(chan struct{})
	var env []string
	var running sync.WaitGroup
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL" {
				env = append(env, kv.Name+"="+kv.Value)
			}
			_ = req.Reply(true, nil)
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			running.Add(1)
			go func(env []string) {
				defer running.Done()
				status := s.exec(ctx, c, ch, gone, p.Command, env)
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
				_ = ch.Close()
			}(env)
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	close(gone)
	_ = ch.Close()
	running.Wait()
}

func (s *Server) exec(ctx context.Context, c *conn, ch ssh.Channel, gone <-chan struct{}, command string, env []string) uint32 {
	s.mu.Lock()
	s.commands = append(s.commands, command)
	s.mu.Unlock()
	args := Split(command)
	switch {
	case len(args) >= 2 && args[0] == "gerrit" && args[1] == "stream-events":
		return s.streamEvents(c, ch, gone, args[2:])
	case len(args) >= 2 && args[0] == "gerrit" && args[1] == "review":
		return s.review(c, ch, command, args)
	case len(args) >= 2 && args[0] == "gerrit" && args[1] == "query":
		return s.query(ch, args[2:])
	case len(args) == 2 && args[0] == "gerrit" && args[1] == "version":
		_, _ = io.WriteString(ch, "gerrit version 3.10.0\n")
		return 0
	case len(args) >= 1 && args[0] == "git-upload-pack":
		return s.uploadPack(ctx, ch, args, env)
	}
	_, _ = fmt.Fprintf(ch.Stderr(), "fatal: %s: not found\n", strings.Join(args[:min(len(args), 2)], " "))
	return 127
}

func (s *Server) streamEvents(c *conn, ch ssh.Channel, gone <-chan struct{}, args []string) uint32 {
	subs := map[string]bool{}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case (a == "-s" || a == "--subscribe") && i+1 < len(args):
			subs[args[i+1]] = true
			i++
		case strings.HasPrefix(a, "--subscribe="):
			subs[strings.TrimPrefix(a, "--subscribe=")] = true
		default:
			_, _ = fmt.Fprintf(ch.Stderr(), "fatal: %q is not a valid option\n", a)
			return 1
		}
	}
	// Lines that are not JSON (pushed by PushRaw) always go out: they stand
	// for corruption on the way, which no subscription filters.
	wanted := func(typ string) bool { return len(subs) == 0 || subs[typ] || typ == "dropped-output" || typ == "" }
	s.mu.Lock()
	next := s.delivered
	if s.streamsStarted > 0 {
		next = max(0, next-s.opts.Resend)
	}
	s.streamsStarted++
	s.streamsActive++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.streamsActive--
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		for next < len(s.events) && !wanted(s.events[next].typ) {
			next++
		}
		if next < len(s.events) {
			line, mid := s.events[next].line, s.dropMid
			s.dropMid = false
			s.mu.Unlock()
			if mid {
				// Half a line, then the connection dies: the event
				// counts as not delivered and the next session sends it.
				_, _ = io.WriteString(ch, line[:len(line)/2])
				_ = c.sc.Close()
				return 0
			}
			if _, err := io.WriteString(ch, line+"\n"); err != nil {
				return 0
			}
			s.mu.Lock()
			s.delivered = max(s.delivered, next+1)
			s.mu.Unlock()
			next++
			continue
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-gone:
			return 0
		case <-c.closed:
			return 0
		case <-s.done:
			return 0
		}
	}
}

func (s *Server) review(c *conn, ch ssh.Channel, command string, args []string) uint32 {
	rc, err := ParseReview(args)
	rc.Raw = command
	s.mu.Lock()
	fail := err == nil && s.failReviews > 0
	if fail {
		s.failReviews--
	}
	if err == nil && !fail {
		s.reviews = append(s.reviews, rc)
	}
	lose := err == nil && !fail && s.loseAnswers > 0
	if lose {
		s.loseAnswers--
	}
	s.mu.Unlock()
	switch {
	case lose:
		_ = c.sc.Close() // applied, but the client never learns it
		return 0
	case err != nil:
		_, _ = fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
		return 1
	case fail:
		_, _ = io.WriteString(ch.Stderr(), "fatal: internal server error (injected by the test)\n")
		return 1
	}
	return 0
}

// query answers `gerrit query --format=JSON --comments` for queries of
// change:N and project:P (or project:{P}): the change, if it has reviews,
// with them as comments, then the stats line.
func (s *Server) query(ch ssh.Channel, args []string) uint32 {
	var project string
	var change int64
	format, comments := "", false
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--format" && i+1 < len(args):
			format = args[i+1]
			i++
		case strings.HasPrefix(a, "--format="):
			format = strings.TrimPrefix(a, "--format=")
		case a == "--comments":
			comments = true
		case strings.HasPrefix(a, "change:"):
			n, err := strconv.ParseInt(strings.TrimPrefix(a, "change:"), 10, 64)
			if err != nil {
				_, _ = fmt.Fprintf(ch, `{"type":"error","message":"invalid change %q"}`+"\n", a)
				return 0
			}
			change = n
		case strings.HasPrefix(a, "project:"):
			project = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(a, "project:"), "{"), "}")
		default:
			_, _ = fmt.Fprintf(ch.Stderr(), "fatal: the test Gerrit does not know %q\n", a)
			return 1
		}
	}
	if format != "JSON" || !comments || change == 0 {
		_, _ = io.WriteString(ch.Stderr(), "fatal: the test Gerrit answers only --format=JSON --comments change:N queries\n")
		return 1
	}
	type comment struct {
		Timestamp int64             `json:"timestamp"`
		Reviewer  map[string]string `json:"reviewer"`
		Message   string            `json:"message"`
	}
	var cs []comment
	for _, rc := range s.Reviews() {
		if rc.Change == change && (project == "" || rc.Project == project) {
			cs = append(cs, comment{Timestamp: time.Now().Unix(), Reviewer: map[string]string{"username": "nixbus"},
				Message: ChangeMessage(strconv.Itoa(int(rc.Patchset)), rc.Labels, rc.Message)})
			project = rc.Project
		}
	}
	rows := 0
	if len(cs) > 0 {
		line, _ := json.Marshal(map[string]any{"project": project, "number": change, "comments": cs})
		_, _ = fmt.Fprintf(ch, "%s\n", line)
		rows = 1
	}
	_, _ = fmt.Fprintf(ch, `{"type":"stats","rowCount":%d,"runTimeMilliseconds":1,"moreChanges":false}`+"\n", rows)
	return 0
}

func (s *Server) uploadPack(ctx context.Context, ch ssh.Channel, args []string, env []string) uint32 {
	if len(args) != 2 {
		_, _ = io.WriteString(ch.Stderr(), "fatal: usage: git-upload-pack '<project>'\n")
		return 1
	}
	project := strings.TrimSuffix(strings.Trim(args[1], "/"), ".git")
	s.mu.Lock()
	dir, ok := s.repos[project]
	s.mu.Unlock()
	if !ok {
		_, _ = fmt.Fprintf(ch.Stderr(), "fatal: project %s not found\n", project)
		return 1
	}
	cmd := exec.CommandContext(ctx, "git", "upload-pack", "--strict", dir)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		_, _ = fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		_, _ = fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
		return 1
	}
	s.wg.Add(1)
	go func() {
		// Ends when the client closes its side or the channel closes.
		defer s.wg.Done()
		_, _ = io.Copy(stdin, ch)
		_ = stdin.Close()
	}()
	err = cmd.Wait()
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		return uint32(max(xe.ExitCode(), 1))
	}
	if err != nil {
		return 1
	}
	return 0
}
