package nix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// WaitDelay is how long Wait waits, after the process exits or its
// context ends, for its output pipes to close before it closes them itself
// (a grandchild holding stderr open must not hang the caller).
const WaitDelay = 5 * time.Second

// Exec returns name with args as every child nixbus runs for nix must be:
// in its own process group, which is killed (SIGKILL) when ctx ends; sent
// SIGKILL by the kernel when the process that started it dies (so a
// SIGKILLed service leaves no evaluation running); and with WaitDelay set.
// Start it with Start (or Run), which applies the memory limit.
//
// The parent-death signal is tied to the OS thread that started the child;
// Go's runtime does not end threads of goroutines that are not locked to
// them, so it fires when the process dies.
func (n *Nix) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = WaitDelay
	if n != nil && len(n.Env) > 0 {
		cmd.Env = append(cmd.Environ(), n.Env...)
	}
	return cmd
}

// killGroup sends SIGKILL to cmd's process group (its pid, see Exec).
func killGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// Proc is a started child: Wait for it, then its group is killed and its
// cgroup, if any, removed.
type Proc struct {
	cmd    *exec.Cmd
	cgroup string
	cgfd   int
	limit  int64
}

// Start starts cmd (from Exec or Command) with n's memory limit: a cgroup
// v2 memory.max when this process may create cgroups below its own (a
// delegated cgroup with the memory controller), else an address-space
// rlimit (RLIMIT_AS) set on the child right after it starts.
func (n *Nix) Start(cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{cmd: cmd, cgfd: -1}
	if n != nil && n.MaxMemoryMB > 0 {
		p.limit = int64(n.MaxMemoryMB) << 20
		if dir, fd, ok := newCgroup(p.limit); ok {
			p.cgroup, p.cgfd = dir, fd
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
		}
	}
	if err := cmd.Start(); err != nil {
		p.release()
		return nil, err
	}
	if p.limit > 0 && p.cgroup == "" {
		lim := &unix.Rlimit{Cur: uint64(p.limit), Max: uint64(p.limit)}
		if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_AS, lim, nil); err != nil {
			_ = killGroup(cmd)
			_ = cmd.Wait()
			p.release()
			return nil, fmt.Errorf("limit the memory of %s: %w", cmd.Path, err)
		}
	}
	return p, nil
}

// Wait waits for the child, kills whatever is left of its process group
// and removes its cgroup.
func (p *Proc) Wait() error {
	err := p.cmd.Wait()
	_ = killGroup(p.cmd)
	p.release()
	return err
}

// OutOfMemory reports whether the child hit the memory limit, as far as
// the cgroup knows (nix itself says "out of memory" under the rlimit).
func (p *Proc) oomKilled() bool {
	if p.cgroup == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(p.cgroup, "memory.events"))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "oom_kill" && f[1] != "0" {
			return true
		}
	}
	return false
}

func (p *Proc) release() {
	if p.cgfd >= 0 {
		_ = unix.Close(p.cgfd)
		p.cgfd = -1
	}
	if p.cgroup != "" {
		_ = os.Remove(p.cgroup)
	}
}

// Run starts cmd with Start and waits for it; stderr is kept in a Capped
// buffer, and a failure is an *Error holding it.
func (n *Nix) Run(cmd *exec.Cmd, stdout *bytes.Buffer) error {
	stderr := NewCapped(StderrHead, StderrTail)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	p, err := n.Start(cmd)
	if err != nil {
		return &Error{Args: cmd.Args, Err: err}
	}
	err = p.Wait()
	if err == nil {
		return nil
	}
	e := &Error{Args: cmd.Args, Err: err, Stderr: stderr.String()}
	if p.limit > 0 && (p.oomKilled() || OutOfMemory(e.Stderr)) {
		e.MemoryLimitMB = int(p.limit >> 20)
	}
	return e
}

// OutOfMemory reports whether nix's stderr says it ran out of memory.
func OutOfMemory(stderr string) bool {
	return strings.Contains(stderr, "error: out of memory") || strings.Contains(stderr, "Out of Memory!")
}

var cgroupSeq atomic.Int64

// cgroupRoot is where the unified cgroup hierarchy is mounted.
var cgroupRoot = "/sys/fs/cgroup"

// newCgroup creates a cgroup below this process's own with memory.max set
// to limit, and returns it with an open descriptor for
// SysProcAttr.CgroupFD; ok is false where cgroup v2 is absent or not
// delegated to this process.
func newCgroup(limit int64) (dir string, fd int, ok bool) {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err != nil {
		return "", -1, false
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", -1, false
	}
	var own string
	for _, l := range strings.Split(string(self), "\n") {
		if rest, found := strings.CutPrefix(l, "0::"); found {
			own = rest
		}
	}
	if own == "" || strings.Contains(own, "..") {
		return "", -1, false
	}
	parent := filepath.Join(cgroupRoot, own)
	sub, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
	if err != nil || !containsWord(string(sub), "memory") {
		return "", -1, false
	}
	dir = filepath.Join(parent, fmt.Sprintf("nixbus-%d-%d", os.Getpid(), cgroupSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", -1, false
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		_ = os.Remove(dir)
		return "", -1, false
	}
	// No swap either, where the kernel accounts it: the limit is memory.
	_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0o644)
	fd, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = os.Remove(dir)
		return "", -1, false
	}
	return dir, fd, true
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// StderrHead and StderrTail bound what is kept of a nix child's stderr:
// its start (where a first error is) and its end (where nix explains why
// it failed). What is in between is counted, not kept.
const (
	StderrHead = 16 << 10
	StderrTail = 64 << 10
)

// Capped is an io.Writer that keeps the first head and the last tail bytes
// written to it, whatever their total.
type Capped struct {
	head, tail int
	h          []byte
	t          []byte // ring of at most tail bytes, t[start:] then t[:start]
	start      int
	dropped    int64
}

// NewCapped returns a Capped keeping head and tail bytes.
func NewCapped(head, tail int) *Capped { return &Capped{head: head, tail: tail} }

func (c *Capped) Write(p []byte) (int, error) {
	n := len(p)
	if room := c.head - len(c.h); room > 0 {
		k := min(room, len(p))
		c.h = append(c.h, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 || c.tail <= 0 {
		c.dropped += int64(len(p))
		return n, nil
	}
	if len(p) >= c.tail {
		c.dropped += int64(len(c.t)) + int64(len(p)-c.tail)
		c.t = append(c.t[:0], p[len(p)-c.tail:]...)
		c.start = 0
		return n, nil
	}
	for len(p) > 0 {
		if len(c.t) < c.tail {
			k := min(c.tail-len(c.t), len(p))
			c.t = append(c.t, p[:k]...)
			p = p[k:]
			continue
		}
		k := copy(c.t[c.start:], p)
		c.dropped += int64(k)
		c.start = (c.start + k) % c.tail
		p = p[k:]
	}
	return n, nil
}

// Dropped is how many bytes were neither kept in the head nor the tail.
func (c *Capped) Dropped() int64 { return c.dropped }

// String is the head, a note of what was dropped, and the tail.
func (c *Capped) String() string {
	var b strings.Builder
	b.Write(c.h)
	if c.dropped > 0 {
		fmt.Fprintf(&b, "\n[... %d bytes left out ...]\n", c.dropped)
	}
	b.Write(c.t[c.start:])
	b.Write(c.t[:c.start])
	return b.String()
}
