package nixbuild

import (
	"regexp"
	"slices"
	"strings"
)

// Transient failures are the infrastructure's, not the build's: the same
// build may well succeed when tried again. Everything else (a builder
// exiting non-zero, a time limit, silence) is the build's own failure
// and is never retried.
//
// Only nix's own lines count: under -L every line a build prints reaches
// the log as "<name>> <line>", and a derivation name holds no space or
// colon, so a build cannot forge a line that starts like nix's.

// buildLineRe is the prefix nix -L puts before a line a build printed.
var buildLineRe = regexp.MustCompile(`^[A-Za-z0-9+\-._?=]+> `)

// transientMarks are what nix 2.8 prints for transient failures, each
// with the reason the builder reports. The texts were captured from real
// nix 2.8 runs (see the testdata) except where noted.
var transientMarks = []struct{ mark, reason string }{
	// The store (or its build directory) filled up: local-derivation-goal.cc
	// adds this note to the build error when the store's disk is nearly full.
	{"note: build failure may have been caused by lack of free disk space", "store out of space"},
	// ENOSPC as nix reports a failed system call ("writing to file: No
	// space left on device", SysError in libutil; not captured here).
	{"No space left on device", "store out of space"},
	// build-remote.cc: "cannot build on '<uri>': <why>" when the
	// connection to a remote builder fails.
	{"cannot build on '", "lost connection to a remote builder"},
	// filetransfer.cc: a fixed-output derivation's builtin:fetchurl (or a
	// substitution) failed to download: "unable to download '<url>': ...".
	{"unable to download '", "download error"},
	// The builder was SIGKILLed from outside (the OOM killer, an
	// operator): "builder for '<drv>' failed due to signal 9 (Killed)".
	{"failed due to signal 9 (Killed)", "builder killed"},
}

// TransientReason returns why a failed build's nix output (stderr, or its
// tail) shows an infrastructure failure, or "" when it shows none.
func TransientReason(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(ansiRe.ReplaceAllString(line, ""))
		if line == "" || buildLineRe.MatchString(line) {
			continue
		}
		for _, m := range transientMarks {
			if strings.Contains(line, m.mark) {
				return m.reason
			}
		}
	}
	return ""
}

// KilledReason is the transient reason of a nix process killed from outside.
const KilledReason = "nix was killed"

// TransientReasons lists every reason TransientReason and a killed nix
// give, once each (for metrics' labels).
func TransientReasons() []string {
	out := []string{KilledReason}
	for _, m := range transientMarks {
		if !slices.Contains(out, m.reason) {
			out = append(out, m.reason)
		}
	}
	return out
}

var ansiRe = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
