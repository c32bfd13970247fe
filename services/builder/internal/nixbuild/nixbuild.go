// Package nixbuild runs one build: over a long-lived nix-daemon connection
// (Daemon, the default), with a `nix build` process (Nix), or as an instant
// stand-in for benchmarks. The builder only sees the Executor interface, so
// any of them can be plugged in.
package nixbuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"nixbus.dev/nixbus/pkg/nix"
)

// Spec is one build to run.
type Spec struct {
	// DrvPath is the derivation, already checked to be a store path.
	DrvPath string
	// OutLink is the path of the out-link nix creates (a GC root for the
	// outputs until they are uploaded).
	OutLink string
	// Outputs are the outputs the evaluator expects (name -> store path).
	Outputs map[string]string
}

// Outcome is how a build that ran ended.
type Outcome struct {
	// ExitCode is nix's exit code; -1 when it was killed by a signal.
	ExitCode int
	// Outputs are the built outputs (name -> store path) on success.
	Outputs map[string]string
	// Error is nix's own one-line account of a failure.
	Error string
	// SilenceTimeout is set when nix gave up on a builder that printed
	// nothing for too long.
	SilenceTimeout bool
	// Transient says why a failure was the infrastructure's (see
	// TransientReason): retrying may succeed. Empty for a build's own.
	Transient string
}

// Executor runs builds. Build writes the build's combined log to log. It
// returns an error only when the build could not be run at all; a build
// that ran and failed is an Outcome with a non-zero ExitCode. When ctx ends
// the build is stopped.
type Executor interface {
	Build(ctx context.Context, spec Spec, log *os.File) (Outcome, error)
}

// Nix builds with the nix command line, one process per build.
type Nix struct {
	Nix *nix.Nix
	// MaxSilentTime is passed as --max-silent-time.
	MaxSilentTime time.Duration
	// RemoteOnly adds --max-jobs 0: every build goes to Nix remote builders.
	RemoteOnly bool
	// KillGrace is how long nix gets to stop its builders after SIGTERM
	// before it is killed.
	KillGrace time.Duration
}

// Args are the arguments after `nix build` and nix's common flags.
func (n *Nix) Args(installable, outLink string) []string {
	args := []string{"-L", "--keep-going", "--max-silent-time", strconv.FormatInt(int64(n.MaxSilentTime/time.Second), 10)}
	if n.RemoteOnly {
		args = append(args, "--max-jobs", "0")
	}
	return append(args, "--json", "--out-link", outLink, installable)
}

// Build runs nix build in its own process group. On cancellation the group
// gets SIGTERM (nix then kills its builders, which run in sessions of their
// own) and, after KillGrace, SIGKILL.
func (n *Nix) Build(ctx context.Context, spec Spec, log *os.File) (Outcome, error) {
	v, err := n.Nix.Version(ctx)
	if err != nil {
		return Outcome{}, err
	}
	cmd := n.Nix.Command(ctx, []string{"build"}, n.Args(nix.DrvInstallable(v, spec.DrvPath), spec.OutLink)...)
	var stdout bytes.Buffer
	cmd.Stdout = &limitedWriter{w: &stdout, n: 1 << 20}
	cmd.Stderr = log
	// Its own group, to signal nix and nothing else; and SIGTERM if this
	// process dies, so an orphaned nix does not go on building.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return signalGroup(cmd.Process, syscall.SIGTERM) }
	cmd.WaitDelay = n.KillGrace
	runErr := cmd.Run()
	if cmd.Process != nil {
		// Whatever is left in the group (nothing, normally) goes too.
		if err := signalGroup(cmd.Process, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return Outcome{}, fmt.Errorf("kill nix build: %w", err)
		}
	}
	if runErr != nil {
		var exit *exec.ExitError
		if !errors.As(runErr, &exit) {
			return Outcome{}, fmt.Errorf("run nix build: %w", runErr)
		}
		tail := Tail(log, tailBytes)
		msg := FirstLine(nix.ErrorMessage(tail))
		timedOut := strings.Contains(msg, "timed out after")
		out := failure(exit.ExitCode(), msg, timedOut, tail)
		if exit.ExitCode() == -1 && ctx.Err() == nil && !timedOut {
			out.Transient = KilledReason
		}
		return out, nil
	}
	out := Outcome{Outputs: spec.Outputs}
	if built, err := parseOutputs(stdout.Bytes(), spec.DrvPath); err == nil {
		out.Outputs = built
	}
	return out, nil
}

// tailBytes is how much of the end of a failed build's log is searched
// for nix's account of the failure.
const tailBytes = 64 << 10

// failure is the Outcome of a build that ran and failed: exit is nix's
// exit code, msg nix's one-line error, tail the end of the log. A time
// limit (timedOut; silence is one) is the build's own failure, whatever
// else it printed; otherwise the log says whether it was the
// infrastructure's (TransientReason).
func failure(exit int, msg string, timedOut bool, tail string) Outcome {
	out := Outcome{ExitCode: exit, Error: msg, SilenceTimeout: timedOut && strings.Contains(msg, "of silence")}
	if !timedOut {
		out.Transient = TransientReason(tail)
	}
	return out
}

func signalGroup(p *os.Process, sig syscall.Signal) error {
	if p == nil {
		return nil
	}
	return syscall.Kill(-p.Pid, sig)
}

// parseOutputs reads `nix build --json`: [{"drvPath": ..., "outputs": {...}}].
func parseOutputs(data []byte, drvPath string) (map[string]string, error) {
	var results []struct {
		DrvPath string            `json:"drvPath"`
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(data, &results); err != nil {
		return nil, fmt.Errorf("parse nix build --json: %w", err)
	}
	for _, r := range results {
		if r.DrvPath == drvPath && len(r.Outputs) > 0 {
			return r.Outputs, nil
		}
	}
	return nil, fmt.Errorf("nix build --json: no outputs for %s", drvPath)
}

// Tail returns up to n bytes from the end of f.
func Tail(f *os.File, n int64) string {
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	k, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	return string(buf[:k])
}

// FirstLine is the first line of nix's error, without its colours and the
// "error: " nix puts in front of it: what a review message shows. The rest
// ("last N log lines: ...", which a ";" leads into) is what the build
// printed, which is in the log already and must not pass for nix's words.
func FirstLine(msg string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(nix.StripANSI(msg)), "\n")
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(line, "error:"); ok {
		line = strings.TrimSpace(rest)
	}
	return strings.TrimSuffix(line, ";")
}

// limitedWriter keeps the first n bytes and drops the rest, so a chatty
// stdout cannot exhaust memory.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(int64(len(p)), l.n)
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
		l.n -= k
	}
	return len(p), nil
}

// Instant reports every build as succeeded without running anything, with
// the outputs the evaluator expected. It exists for benchmarks of the bus.
type Instant struct{}

// Build writes one log line and succeeds.
func (Instant) Build(_ context.Context, spec Spec, log *os.File) (Outcome, error) {
	if log != nil {
		if _, err := fmt.Fprintf(log, "instant mode: %s was not built\n", spec.DrvPath); err != nil {
			return Outcome{}, fmt.Errorf("write log: %w", err)
		}
	}
	return Outcome{Outputs: spec.Outputs}, nil
}
