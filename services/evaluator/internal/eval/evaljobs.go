package eval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"

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
	Logger      *slog.Logger
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
	cmd := exec.CommandContext(ctx, e.Bin, e.Args(installable)...)
	if e.Nix != nil && len(e.Nix.Env) > 0 {
		cmd.Env = append(cmd.Environ(), e.Nix.Env...)
	}
	stderr := &tailBuffer{max: 64 << 10}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Result{Evaluator: "nix-eval-jobs"}, fmt.Errorf("nix-eval-jobs stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return Result{Evaluator: "nix-eval-jobs"}, &Failure{Msg: fmt.Sprintf("start nix-eval-jobs: %v", err)}
	}
	res := Result{Evaluator: "nix-eval-jobs"}
	res.Records, res.Garbage, err = ParseLines(stdout, func(line []byte, why error) {
		e.Logger.Warn("garbage line from nix-eval-jobs", "line", truncate(string(line), 300), "err", why)
	})
	if err != nil {
		// Reading failed: drain nothing more, let Wait reap the process.
		_ = cmd.Process.Kill()
	}
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if err != nil {
		return res, fmt.Errorf("read nix-eval-jobs output: %w", err)
	}
	if werr != nil {
		return res, &Failure{Msg: fmt.Sprintf("nix-eval-jobs: %v: %s", werr, CleanError(stderr.String()))}
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

// ParseLines reads nix-eval-jobs' JSON lines. A line that is not a record
// (not JSON, not an object, no attribute, neither drvPath nor error) is
// passed to garbage and counted, never fatal. Fields of an unexpected type
// are ignored rather than losing the record. Blank lines are skipped.
func ParseLines(r io.Reader, garbage func(line []byte, why error)) (records []Record, bad int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, rerr := br.ReadBytes('\n')
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 {
			rec, perr := ParseLine(trimmed)
			if perr != nil {
				bad++
				if garbage != nil {
					garbage(trimmed, perr)
				}
			} else {
				records = append(records, rec)
			}
		}
		if rerr == io.EOF {
			return records, bad, nil
		}
		if rerr != nil {
			return records, bad, rerr
		}
	}
}

// ParseLine parses one nix-eval-jobs record.
func ParseLine(line []byte) (Record, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return Record{}, fmt.Errorf("not a JSON object: %w", err)
	}
	var rec Record
	str := func(key string) string {
		var s string
		if raw, ok := fields[key]; ok && json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	if raw, ok := fields["attrPath"]; ok {
		var path []string
		if json.Unmarshal(raw, &path) == nil && len(path) > 0 {
			rec.AttrPath = path
		}
	}
	attr := str("attr")
	switch {
	case rec.AttrPath != nil:
		rec.Attr = AttrName(rec.AttrPath)
	case attr != "":
		rec.Attr = attr
		rec.AttrPath = strings.Split(attr, ".")
	default:
		return Record{}, errors.New("no attr or attrPath")
	}
	rec.DrvPath = str("drvPath")
	rec.Name = str("name")
	rec.System = str("system")
	if msg := str("error"); msg != "" {
		rec.Error = CleanError(msg)
		rec.DrvPath = ""
	} else if raw, has := fields["error"]; has && string(bytes.TrimSpace(raw)) != "null" {
		// An error of an odd type is still an error.
		rec.Error = "evaluation failed"
		rec.DrvPath = ""
	}
	if rec.DrvPath == "" && rec.Error == "" {
		return Record{}, errors.New("neither drvPath nor error")
	}
	if raw, ok := fields["outputs"]; ok && rec.Error == "" {
		var outs map[string]*string
		if json.Unmarshal(raw, &outs) == nil {
			rec.Outputs = make(map[string]string, len(outs))
			for name, p := range outs {
				if p != nil {
					rec.Outputs[name] = *p
				} else {
					rec.Outputs[name] = ""
				}
			}
		}
	}
	if raw, ok := fields["isCached"]; ok {
		var b bool
		if json.Unmarshal(raw, &b) == nil {
			rec.CacheKnown, rec.Cached = true, b
		}
	}
	switch str("cacheStatus") {
	case "cached", "local":
		rec.CacheKnown, rec.Cached = true, true
	case "notBuilt":
		rec.CacheKnown = true
	}
	return rec, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
