// Package eval turns a flake's hydraJobs into job records, either by running
// nix-eval-jobs or, where it is not installed, with plain nix. Both produce
// the same Record, one per attribute that is a derivation or failed to be one.
package eval

import (
	"strings"

	"nixbus.dev/nixbus/pkg/evaljobs"
	"nixbus.dev/nixbus/pkg/nix"
)

// Record is one hydraJobs attribute as an evaluator reported it: the
// nix-eval-jobs record, which the built-in evaluator produces too.
type Record = evaljobs.Job

// Result is what one evaluation produced.
type Result struct {
	Records []Record
	// Garbage counts output lines that were not a record.
	Garbage int
	// Evaluator names what evaluated: "nix-eval-jobs" or "builtin".
	Evaluator string
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
