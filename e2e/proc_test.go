package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proc is one `nixbus <service>` process, as an operator runs it; it can
// be stopped, killed and started again with the same flags. Its output,
// across restarts, goes to one log file shown if the test fails.
type proc struct {
	t    *testing.T
	bin  string
	name string
	args []string
	log  string
	cmd  *exec.Cmd
	out  *os.File
}

// procArgs are the flags every service process of a test gets.
func procArgs(natsURL, stateDir string, extra ...string) []string {
	return append([]string{"--nats", natsURL, "--state-dir", stateDir, "--http.address", "127.0.0.1:0",
		"--nix.option", "substituters=", "--reporter.log-base-url", "http://ci.example/logs", "--log.level", "info"}, extra...)
}

// startProc runs `bin name args...` until it is stopped or the test ends.
func startProc(t *testing.T, bin, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, bin: bin, name: name, args: append([]string{name}, args...), log: filepath.Join(t.TempDir(), name+".log")}
	p.start()
	t.Cleanup(func() {
		if p.running() {
			p.kill() // only if the test failed before stopping it
		}
		if t.Failed() {
			data, _ := os.ReadFile(p.log)
			t.Logf("log of %s:\n%s", name, tail(string(data), 8000))
		}
	})
	return p
}

// start starts the process (again), appending to its log.
func (p *proc) start() {
	p.t.Helper()
	require.False(p.t, p.running(), "%s is running", p.name)
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(p.t, err)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(p.t, cmd.Start(), p.name)
	p.cmd, p.out = cmd, out
}

func (p *proc) running() bool { return p.out != nil }

// kill sends SIGKILL, as a crash or the OOM killer would, and reaps it.
func (p *proc) kill() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGKILL), p.name)
	_ = p.cmd.Wait() // "signal: killed"
	p.closeLog()
}

// stop sends SIGTERM and requires a clean exit within 30s.
func (p *proc) stop() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM), p.name)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		p.closeLog()
		require.NoError(p.t, err, "%s did not stop cleanly", p.name)
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

func (p *proc) closeLog() {
	require.NoError(p.t, p.out.Close())
	p.out = nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
