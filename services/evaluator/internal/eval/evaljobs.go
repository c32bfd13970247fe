package eval

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/evaljobs"
	"nixbus.dev/nixbus/pkg/nix"
)

// NixEvalJobs runs nix-eval-jobs with the flags the Buildbot original uses.
type NixEvalJobs struct {
	// Bin is the nix-eval-jobs executable.
	Bin string
	// Nix supplies the common nix flags (experimental features, options)
	// and environment; nix-eval-jobs accepts the same.
	Nix         *nix.Nix
	Workers     int
	MaxMemoryMB int
	GCRootsDir  string
	// Emit, when set, gets each record as soon as its line is read, and
	// Result.Records stays empty: memory does not grow with the job count.
	Emit   func(Record)
	Logger *slog.Logger
}

// Args are nix-eval-jobs' arguments for evaluating installable
// (<flake>#hydraJobs).
func (e *NixEvalJobs) Args(installable string) []string {
	args := e.Nix.Args()
	return append(args,
		"--workers", strconv.Itoa(e.Workers),
		"--max-memory-size", strconv.Itoa(e.MaxMemoryMB),
		"--gc-roots-dir", e.GCRootsDir,
		"--force-recurse",
		"--check-cache-status",
		"--flake", installable,
	)
}

// Eval runs nix-eval-jobs on installable and reads its records as they
// come. If it exits with an error, the records read so far are returned
// with a *Failure holding its message.
func (e *NixEvalJobs) Eval(ctx context.Context, installable string) (Result, error) {
	// Its own process group, killed with this process and on ctx's end;
	// not the rlimit of Nix.Start: nix-eval-jobs applies --max-memory-size
	// to its workers itself.
	cmd := e.Nix.Exec(ctx, e.Bin, e.Args(installable)...)
	stderr := nix.NewCapped(nix.StderrHead, nix.StderrTail)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Result{Evaluator: "nix-eval-jobs"}, fmt.Errorf("nix-eval-jobs stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return Result{Evaluator: "nix-eval-jobs"}, &Failure{Msg: fmt.Sprintf("start nix-eval-jobs: %v", err)}
	}
	res := Result{Evaluator: "nix-eval-jobs"}
	emit := e.Emit
	if emit == nil {
		emit = func(r Record) { res.Records = append(res.Records, r) }
	}
	res.Garbage, err = evaljobs.ReadLines(stdout, emit, func(line []byte, why error) {
		e.Logger.Warn("garbage line from nix-eval-jobs", "line", bus.Truncate(string(line), 300), "err", why)
	})
	if err != nil {
		// Reading failed: drain nothing more, let Wait reap the process.
		_ = cmd.Cancel()
	}
	werr := cmd.Wait()
	_ = cmd.Cancel() // whatever is left in its group
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if err != nil {
		return res, fmt.Errorf("read nix-eval-jobs output: %w", err)
	}
	if werr != nil {
		return res, &Failure{Msg: fmt.Sprintf("nix-eval-jobs: %v: %s", werr, evaljobs.CleanError(stderr.String()))}
	}
	return res, nil
}

// Failure is an evaluation that failed as a whole: the flake does not
// evaluate, the evaluator crashed. Msg is for the change's report.
type Failure struct{ Msg string }

func (f *Failure) Error() string { return f.Msg }

// IsFailure reports whether err is a Failure and returns its message.
func IsFailure(err error) (string, bool) {
	var f *Failure
	if errors.As(err, &f) {
		return f.Msg, true
	}
	return "", false
}
