package nixdaemon

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
)

// Process is a daemon started as a child (`nix-daemon --stdio`) with a
// connection to it.
type Process struct {
	*Conn
	cmd   *exec.Cmd
	stdin io.Closer
}

// Start starts cmd (nix-daemon --stdio, set up by the caller: process
// group, cancellation, environment) and greets it. Its stderr, if any,
// goes where cmd.Stderr says.
func Start(cmd *exec.Cmd) (*Process, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start nix daemon: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start nix daemon: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nix daemon: %w", err)
	}
	p := &Process{cmd: cmd, stdin: stdin}
	if p.Conn, err = Open(stdout, stdin); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

// Pid is the daemon's process id (and, when the caller gave it a process
// group of its own, the group's).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Close ends the connection: the daemon exits when its input ends.
// Wait for it with Wait.
func (p *Process) Close() error {
	err := p.stdin.Close()
	if werr := p.cmd.Wait(); werr != nil && err == nil {
		var exit *exec.ExitError
		if !errors.As(werr, &exit) {
			err = werr
		}
	}
	return err
}
