// Package eval turns a flake's hydraJobs into job records, either by running
// nix-eval-jobs or, where it is not installed, with plain nix. Both produce
// the same Record, one per attribute that is a derivation or failed to be one.
package eval

import (
	"regexp"
	"strings"

	"nixbus.dev/nixbus/pkg/nix"
)

// Record is one hydraJobs attribute as an evaluator reported it.
type Record struct {
	// Attr is the attribute path as Nix prints one: components joined by
	// dots, each one that is not a plain identifier quoted, so that
	// {"a.b" = ...} and {a.b = ...} stay apart.
	Attr     string
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
	// Error is set when the attribute did not evaluate; DrvPath is then empty.
	Error string
}

// Result is what one evaluation produced.
type Result struct {
	Records []Record
	// Garbage counts output lines that were not a record.
	Garbage int
	// Evaluator names what evaluated: "nix-eval-jobs" or "builtin".
	Evaluator string
}

var identifier = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_'-]*$`)

// AttrName joins an attribute path the way Nix shows one.
func AttrName(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		if identifier.MatchString(p) {
			parts[i] = p
		} else {
			parts[i] = nix.StringLiteral(p)
		}
	}
	return strings.Join(parts, ".")
}

// AttrPathExpr is a Nix list expression holding path, each name a string
// literal, so that any attribute name can be embedded in an expression.
func AttrPathExpr(path []string) string {
	var b strings.Builder
	b.WriteString("[")
	for _, p := range path {
		b.WriteString(" ")
		b.WriteString(nix.StringLiteral(p))
	}
	b.WriteString(" ]")
	return b.String()
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
	return msg
}
