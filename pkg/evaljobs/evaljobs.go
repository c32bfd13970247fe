// Package evaljobs is the nix-eval-jobs record: the JSON line it prints per
// hydraJobs attribute, and the one reading of it that the evaluator and the
// planner's replay share, so that a replayed evaluation names, caches and
// fails jobs exactly as a real run does.
package evaljobs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"nixbus.dev/nixbus/pkg/jsontok"
	"nixbus.dev/nixbus/pkg/nix"
	"nixbus.dev/nixbus/pkg/printable"
)

// Job is one hydraJobs attribute as an evaluator reported it.
type Job struct {
	// Attr is the attribute path as Nix prints one: components joined by
	// dots, each one that is not a plain identifier quoted, so that
	// {"a.b" = ...} and {a.b = ...} stay apart (AttrName). It is printable,
	// valid UTF-8 and unique: names that are not UTF-8 or hold control
	// characters are escaped, never merged.
	Attr string
	// AttrPath holds the names as the flake spells them, byte for byte
	// (they may not be UTF-8): what addresses the attribute in Nix. On the
	// bus it goes as ShownPath(AttrPath).
	AttrPath []string
	DrvPath  string
	Name     string
	System   string
	// Outputs maps output name to store path.
	Outputs map[string]string
	// CacheKnown is set when the evaluator checked the cache itself
	// (nix-eval-jobs --check-cache-status); Cached is then its answer.
	CacheKnown bool
	Cached     bool
	// Error is set when the attribute did not evaluate; DrvPath is then
	// empty. It is printable (CleanError).
	Error string
}

// MaxLineBytes bounds one line of nix-eval-jobs' output that is read: a
// longer one (an error message the flake made huge) is garbage, and only
// its head is kept for the log.
const MaxLineBytes = 16 << 20

// ReadLines reads nix-eval-jobs' JSON lines and hands each record to emit
// as soon as its line is read, so that a reader keeps nothing it does not
// want. A line that is not a record, or is over MaxLineBytes, is passed to
// garbage and counted, never fatal. Blank lines are skipped.
func ReadLines(r io.Reader, emit func(Job), garbage func(line []byte, why error)) (bad int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, tooLong, rerr := readLine(br)
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 {
			job, perr := ParseLine(trimmed)
			if tooLong {
				perr = fmt.Errorf("line over %d bytes", MaxLineBytes)
			}
			if perr != nil {
				bad++
				if garbage != nil {
					garbage(trimmed, perr)
				}
			} else {
				emit(job)
			}
		}
		if errors.Is(rerr, io.EOF) {
			return bad, nil
		}
		if rerr != nil {
			return bad, rerr
		}
	}
}

// readLine reads up to and including the next newline; of a line over
// MaxLineBytes it returns the first 256 bytes, with tooLong set.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		frag, err := br.ReadSlice('\n')
		switch {
		case tooLong:
		case len(line)+len(frag) > MaxLineBytes:
			tooLong = true
			if n := len(line); n < 256 {
				line = append(line, frag[:min(len(frag), 256-n)]...)
			} else {
				line = line[:256]
			}
		default:
			line = append(line, frag...)
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, tooLong, err
		}
	}
}

// ParseLine reads one nix-eval-jobs record. A line that is not a JSON
// object, or names no attribute, or has neither drvPath nor error, is an
// error. Fields of an unexpected type are ignored rather than losing the
// record; an error field of any type but string or null is an error.
func ParseLine(line []byte) (Job, error) { return parseLine(line, true) }

// ParseLineSkipOutputs is ParseLine for a reader that has no use for a
// job's outputs (the planner's replay): the outputs field is checked as
// JSON but not decoded, which saves a map per job. Outputs is nil; the
// rest is ParseLine's.
func ParseLineSkipOutputs(line []byte) (Job, error) { return parseLine(line, false) }

func parseLine(line []byte, withOutputs bool) (Job, error) {
	var (
		job                 Job
		attr, cacheStatus   string
		errMsg              string
		hasErr              bool // an error field that is not null
		outputs             map[string]string
		isCached, hasCached bool
	)
	var sc jsontok.Scanner
	sc.ResetBytes(line, jsontok.Limits{})
	err := sc.Members(func(key []byte) error {
		var err error
		switch string(key) {
		case "attr":
			attr, _, err = optStr(&sc)
		case "attrPath":
			job.AttrPath, err = optStrs(&sc)
		case "drvPath":
			job.DrvPath, _, err = optStr(&sc)
		case "name":
			job.Name, _, err = optStr(&sc)
		case "system":
			job.System, _, err = optStr(&sc)
		case "error":
			if hasErr, err = notNull(&sc); err == nil && hasErr {
				errMsg, _, err = optStr(&sc)
			}
		case "outputs":
			if !withOutputs {
				err = sc.Skip()
				break
			}
			outputs, err = optOutputs(&sc)
		case "isCached":
			isCached, hasCached, err = optBool(&sc)
		case "cacheStatus":
			cacheStatus, _, err = optStr(&sc)
		default:
			err = sc.Skip()
		}
		return err
	})
	if err == nil {
		err = sc.Expect(jsontok.End)
	}
	if err != nil {
		return Job{}, fmt.Errorf("not a JSON object: %w", err)
	}
	switch {
	case len(job.AttrPath) > 0:
		job.Attr = AttrName(job.AttrPath)
	case attr != "":
		job.AttrPath = strings.Split(attr, ".")
		job.Attr = AttrName(job.AttrPath)
	default:
		return Job{}, errors.New("no attr or attrPath")
	}
	if hasErr {
		// An empty message, or one of an odd type, is still an error.
		job.Error, job.DrvPath = CleanError(errMsg), ""
	}
	if job.DrvPath == "" && job.Error == "" {
		return Job{}, errors.New("neither drvPath nor error")
	}
	if job.Error == "" {
		job.Outputs = outputs
	}
	job.CacheKnown, job.Cached = hasCached, isCached
	switch cacheStatus {
	case "cached", "local":
		job.CacheKnown, job.Cached = true, true
	case "notBuilt":
		job.CacheKnown = true
	}
	return job, nil
}

const showTraceHint = "(use '--show-trace' to show detailed location information)"

// CleanError turns nix's report of an evaluation error into the message a
// job carries: colours, warnings, the --show-trace hint and the leading
// "error:" go.
func CleanError(stderr string) string {
	msg := nix.ErrorMessage(stderr)
	lines := strings.Split(msg, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if strings.TrimSpace(l) == showTraceHint {
			continue
		}
		kept = append(kept, l)
	}
	msg = strings.TrimSpace(strings.Join(kept, "\n"))
	msg = strings.TrimSpace(strings.TrimPrefix(msg, "error:"))
	if msg == "" {
		return "evaluation failed"
	}
	return printable.Text(msg)
}
