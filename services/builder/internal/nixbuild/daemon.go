package nixbuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"nixbus.dev/nixbus/pkg/nix"
	"nixbus.dev/nixbus/pkg/nixdaemon"
)

// Daemon builds through long-lived `nix-daemon --stdio` connections, one
// build at a time on each. A `nix build` process costs ~0.15 s before it
// builds anything (starting nix, then nix's build-remote hook); over a
// connection a build costs what it costs inside one nix. Connections are
// replaced after MaxUses builds, because a daemon keeps everything it
// built alive (temporary GC roots) for as long as it runs.
type Daemon struct {
	Nix *nix.Nix
	// MaxSilentTime kills a build that prints nothing for this long.
	MaxSilentTime time.Duration
	// RemoteOnly builds nothing locally (max-jobs 0): every build goes to
	// Nix remote builders.
	RemoteOnly bool
	// KillGrace is how long a daemon gets to stop its builders after
	// SIGTERM before it is killed.
	KillGrace time.Duration
	// HookDir, when set, is where the decline hook is written (see
	// writeDeclineHook).
	HookDir string
	// MaxUses is how many builds a connection serves; 64 when 0.
	MaxUses int
	// IdleTimeout closes a connection nobody used for this long; 30 s
	// when 0.
	IdleTimeout time.Duration

	initMu sync.Mutex
	// opts are the connections' settings; nil until read (see init).
	opts *nixdaemon.Options

	mu     sync.Mutex
	idle   []*daemonConn
	closed bool
}

type daemonConn struct {
	p         *nixdaemon.Process
	uses      int
	idleSince time.Time
}

// Close closes the idle connections; builds still running keep theirs
// until they end, and those are closed then.
func (d *Daemon) Close() error {
	d.mu.Lock()
	idle := d.idle
	d.idle, d.closed = nil, true
	d.mu.Unlock()
	var errs []error
	for _, c := range idle {
		errs = append(errs, c.p.Close())
	}
	return errors.Join(errs...)
}

// init reads nix's settings once: a connection's options replace the
// daemon's own for the fields wopSetOptions always sends, so they are
// sent as nix.conf (and --nix.option) set them. A failure (the build's
// context ending, say) is not kept: the next build tries again.
func (d *Daemon) init(ctx context.Context) error {
	d.initMu.Lock()
	defer d.initMu.Unlock()
	if d.opts != nil {
		return nil
	}
	out, err := d.Nix.Output(ctx, []string{"show-config"}, "--json")
	if err != nil {
		return fmt.Errorf("read nix settings: %w", err)
	}
	opts, err := d.options(ctx, out)
	if err != nil {
		return err
	}
	d.opts = &opts
	return nil
}

// options are the connection settings from `nix show-config --json`.
func (d *Daemon) options(ctx context.Context, out []byte) (nixdaemon.Options, error) {
	var cfg map[string]struct {
		Value        json.RawMessage `json:"value"`
		DefaultValue json.RawMessage `json:"defaultValue"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		return nixdaemon.Options{}, fmt.Errorf("read nix settings: %w", err)
	}
	num := func(k string) uint64 {
		var v uint64
		_ = json.Unmarshal(cfg[k].Value, &v)
		return v
	}
	flag := func(k string) bool {
		var v bool
		_ = json.Unmarshal(cfg[k].Value, &v)
		return v
	}
	str := func(k string) string {
		var v string
		_ = json.Unmarshal(cfg[k].Value, &v)
		return v
	}
	o := nixdaemon.Options{
		KeepFailed: flag("keep-failed"), KeepGoing: true, TryFallback: flag("fallback"),
		Verbosity: nixdaemon.LevelInfo, MaxBuildJobs: num("max-jobs"),
		MaxSilentTime: uint64(d.MaxSilentTime / time.Second), BuildCores: num("cores"),
		UseSubstitutes: flag("substitute"), Overrides: map[string]string{},
	}
	if d.RemoteOnly {
		o.MaxBuildJobs = 0
	}
	for k, v := range d.Nix.Options {
		switch k {
		case "keep-failed", "keep-going", "fallback", "max-jobs", "max-silent-time", "cores", "substitute":
		default:
			o.Overrides[k] = v
		}
	}
	hookIsDefault := string(cfg["build-hook"].Value) == string(cfg["build-hook"].DefaultValue)
	if d.HookDir != "" && !d.RemoteOnly && hookIsDefault && noRemoteBuilders(str("builders")) {
		if hook, err := writeDeclineHook(ctx, d.Nix, d.HookDir); err == nil {
			o.Overrides["build-hook"] = hook
		}
	}
	return o, nil
}

// Check reads nix's settings and opens a connection, kept for the first
// build: a builder that cannot build says so when it starts, not at each
// build it is handed.
func (d *Daemon) Check(ctx context.Context) error {
	if err := d.init(ctx); err != nil {
		return err
	}
	c, err := d.get(ctx)
	if err != nil {
		return fmt.Errorf("connect to nix: %w", err)
	}
	d.put(c)
	return nil
}

// noRemoteBuilders reports whether nix's builders setting names no
// machine: then nix's build-remote hook, started once per build over a
// connection, would only decline (about 0.1 s of CPU each time).
func noRemoteBuilders(builders string) bool {
	builders = strings.TrimSpace(builders)
	if file, ok := strings.CutPrefix(builders, "@"); ok {
		data, err := os.ReadFile(file)
		if errors.Is(err, os.ErrNotExist) {
			return true
		}
		if err != nil {
			return false
		}
		builders = string(data)
	}
	for _, l := range strings.FieldsFunc(builders, func(r rune) bool { return r == '\n' || r == ';' }) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// writeDeclineHook writes a build hook that declines every build for
// good, and stays until nix kills it (nix writes to it after reading the
// answer; a hook gone by then would be reported as having died).
func writeDeclineHook(ctx context.Context, n *nix.Nix, dir string) (string, error) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		return "", err
	}
	if cat, err = filepath.Abs(cat); err != nil {
		return "", err
	}
	if strings.ContainsAny(cat, "'\n") {
		return "", errors.New("cat path not quotable")
	}
	path := filepath.Join(dir, "nixbus-decline-hook")
	script := "#!/bin/sh\n# nixbus builder: no remote builders are configured.\necho '# decline-permanently' >&2\nexec '" + cat + "' >/dev/null\n"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	// It must run here (not on a noexec mount, say): a hook that fails
	// to start would be reported on every build.
	cmd := n.Exec(ctx, path, "0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("try the decline hook %s: %w", path, err)
	}
	if got := stderr.String(); got != "# decline-permanently\n" {
		return "", fmt.Errorf("try the decline hook %s: it said %q", path, got)
	}
	return path, nil
}

func (d *Daemon) get(ctx context.Context) (*daemonConn, error) {
	d.mu.Lock()
	if n := len(d.idle); n > 0 {
		c := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	// Not tied to ctx: the connection outlives this build. A SIGTERM when
	// the builder dies lets nix stop its builders (they run in sessions
	// of their own, out of reach of a group kill).
	cmd := d.Nix.DaemonCommand(context.WithoutCancel(ctx))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stderr := nix.NewCapped(4<<10, 4<<10)
	cmd.Stderr = stderr
	p, err := nixdaemon.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w (stderr: %s)", err, strings.TrimSpace(stderr.String()))
	}
	if err := p.SetOptions(*d.opts); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return &daemonConn{p: p}, nil
}

// put returns a healthy connection to the pool.
func (d *Daemon) put(c *daemonConn) {
	c.uses++
	maxUses := d.MaxUses
	if maxUses <= 0 {
		maxUses = 64
	}
	d.mu.Lock()
	if d.closed || c.uses >= maxUses {
		d.mu.Unlock()
		_ = c.p.Close()
		return
	}
	c.idleSince = time.Now()
	d.idle = append(d.idle, c)
	d.mu.Unlock()
	idle := d.IdleTimeout
	if idle <= 0 {
		idle = 30 * time.Second
	}
	time.AfterFunc(idle, func() { d.reap(idle) })
}

// reap closes connections idle for longer than idle.
func (d *Daemon) reap(idle time.Duration) {
	d.mu.Lock()
	var keep, stale []*daemonConn
	for _, c := range d.idle {
		if time.Since(c.idleSince) >= idle {
			stale = append(stale, c)
		} else {
			keep = append(keep, c)
		}
	}
	d.idle = keep
	d.mu.Unlock()
	for _, c := range stale {
		_ = c.p.Close()
	}
}

// stop ends a connection in the middle of a build: SIGTERM to its group
// (nix kills its builders), SIGKILL after KillGrace.
func (d *Daemon) stop(c *daemonConn, done <-chan struct{}) {
	_ = syscall.Kill(-c.p.Pid(), syscall.SIGTERM)
	t := time.NewTimer(d.KillGrace)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	_ = syscall.Kill(-c.p.Pid(), syscall.SIGKILL)
	<-done
	_ = c.p.Close()
}

// Build builds spec's derivation over a pooled connection.
func (d *Daemon) Build(ctx context.Context, spec Spec, log *os.File) (Outcome, error) {
	if err := d.init(ctx); err != nil {
		return Outcome{}, err
	}
	c, err := d.get(ctx)
	if err != nil {
		return Outcome{}, fmt.Errorf("connect to nix: %w", err)
	}
	lg := &buildLog{f: log, names: map[uint64]string{}}
	var results []nixdaemon.BuildResult
	var buildErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		results, buildErr = c.p.BuildPathsWithResults([]string{spec.DrvPath + "!*"}, nixdaemon.Normal, lg)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		d.stop(c, done)
		lg.line("error: build stopped: " + context.Cause(ctx).Error())
		return Outcome{ExitCode: -1, Error: "build stopped"}, nil
	}
	switch {
	case buildErr != nil && nixdaemon.IsDaemonError(buildErr):
		// nix refused the build as a whole ("unable to start any build").
		// The daemon may have ended the connection after it.
		_ = c.p.Close()
		msg := FirstLine(buildErr.Error())
		lg.line("error: " + msg)
		return failure(1, msg, false, Tail(log, tailBytes)), nil
	case buildErr != nil:
		// The daemon died under the build (killed from outside, out of
		// memory): the infrastructure's failure.
		_ = c.p.Close()
		msg := "nix daemon: " + buildErr.Error()
		lg.line("error: " + msg)
		return Outcome{ExitCode: -1, Error: msg, Transient: KilledReason}, nil
	case len(results) != 1:
		_ = c.p.Close()
		return Outcome{}, fmt.Errorf("nix daemon: %d results for one build", len(results))
	}
	res := results[0]
	if !res.Status.Success() {
		d.put(c)
		msg := FirstLine(res.ErrorMsg)
		if msg == "" {
			msg = fmt.Sprintf("build failed (nix status %d)", res.Status)
		}
		lg.line("error: " + msg)
		return failure(exitCode(res.Status), msg, res.Status == nixdaemon.TimedOut, Tail(log, tailBytes)), nil
	}
	outputs := spec.Outputs
	if len(res.Outputs) > 0 {
		outputs = make(map[string]string, len(res.Outputs))
		store := filepath.Dir(spec.DrvPath)
		for name, p := range res.Outputs {
			if !strings.HasPrefix(p, "/") {
				p = filepath.Join(store, p)
			}
			outputs[name] = p
		}
	}
	if err := d.root(c, spec.OutLink, outputs); err != nil {
		_ = c.p.Close()
		return Outcome{}, err
	}
	d.put(c)
	return Outcome{Outputs: outputs}, nil
}

// root links each output from outLink (outLink-<name> for outputs other
// than out, as nix build --out-link does) and registers the links as GC
// roots, while the connection's temporary roots still hold the outputs.
func (d *Daemon) root(c *daemonConn, outLink string, outputs map[string]string) error {
	for name, p := range outputs {
		link := outLink
		if name != "out" {
			link += "-" + name
		}
		tmp := link + ".tmp"
		_ = os.Remove(tmp)
		if err := os.Symlink(p, tmp); err != nil {
			return fmt.Errorf("link output: %w", err)
		}
		if err := os.Rename(tmp, link); err != nil {
			return fmt.Errorf("link output: %w", err)
		}
		if err := c.p.AddIndirectRoot(link); err != nil {
			return err
		}
	}
	return nil
}

// exitCode is the code nix build exits with for a build ending so
// (Worker::exitStatus): 100 a failed build, 101 a timed-out one.
func exitCode(s nixdaemon.BuildStatus) int {
	switch s {
	case nixdaemon.TimedOut:
		return 101
	case nixdaemon.MiscFailure, nixdaemon.TransientFailure:
		return 1
	default:
		return 100
	}
}

// buildLog writes what the daemon reports the way `nix build -L` prints
// it: nix's lines as they are, a build's lines as "<name>> <line>".
type buildLog struct {
	f     *os.File
	names map[uint64]string
}

func (l *buildLog) line(s string) {
	if l.f != nil {
		_, _ = l.f.WriteString(s + "\n")
	}
}

func (l *buildLog) Message(s string) { l.line(s) }

func (l *buildLog) StartActivity(a nixdaemon.Activity) {
	if a.Type == nixdaemon.ActBuild && len(a.Fields) > 0 && a.Fields[0].IsStr {
		l.names[a.ID] = drvName(a.Fields[0].Str)
	}
	if a.Text != "" && a.Level <= nixdaemon.LevelInfo {
		l.line(a.Text + "...")
	}
}

func (l *buildLog) StopActivity(id uint64) { delete(l.names, id) }

func (l *buildLog) Result(id uint64, typ nixdaemon.ResultType, fields []nixdaemon.Field) {
	if (typ != nixdaemon.ResBuildLogLine && typ != nixdaemon.ResPostBuildLogLine) || len(fields) == 0 || !fields[0].IsStr {
		return
	}
	name, ok := l.names[id]
	if !ok {
		name = "nix"
	}
	l.line(name + "> " + fields[0].Str)
}

// drvName is a derivation's name: its base name without hash and .drv.
func drvName(drvPath string) string {
	base := strings.TrimSuffix(filepath.Base(drvPath), ".drv")
	if _, name, ok := strings.Cut(base, "-"); ok {
		return name
	}
	return base
}
