package reporter

import (
	"fmt"
	"strings"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/printable"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Caps on a review message, whatever the verdict holds: Gerrit refuses
// very long messages, and the message goes on the bus in ReviewPosted.
const (
	// MaxMessageBytes bounds one review message.
	MaxMessageBytes = 32 << 10
	maxAttrBytes    = 512
	// maxLineBytes bounds one line: an attribute, its reason and a link.
	maxLineBytes = 2 << 10
)

// Vote is the Verified label value a verdict earns.
func Vote(v *nixbuspb.RunVerdict) int {
	if v.GetStatus() == nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED {
		return 1
	}
	return -1
}

// Message renders a verdict in the shape buildbot-nix reviews have, so
// contributors read what they are used to:
//
//	The result is: FAILURE
//
//	Failed checks:
//	 - <attr>: <how> (see <log link>)
func Message(v *nixbuspb.RunVerdict, logBaseURL string, limit int) string {
	var b strings.Builder
	result := "SUCCESS"
	if Vote(v) < 0 {
		result = "FAILURE"
	}
	fmt.Fprintf(&b, "The result is: %s\n", result)
	fmt.Fprintf(&b, "\n%d jobs: %d built, %d cached, %d failed, %d skipped.\n",
		v.GetJobCount(), v.GetSucceededCount(), v.GetCachedCount(), v.GetFailedCount(), v.GetSkippedCount())
	if e := v.GetEvalError(); e != "" {
		fmt.Fprintf(&b, "\nEvaluation failed: %s\n", bus.Truncate(oneLine(e), maxLineBytes))
	}
	if len(v.GetFailed()) == 0 {
		return b.String()
	}
	b.WriteString("\nFailed checks:\n")
	listed := 0
	for _, o := range v.GetFailed() {
		if listed == limit || b.Len() > MaxMessageBytes-maxLineBytes {
			break
		}
		listed++
		fmt.Fprintf(&b, " - %s: %s", shownAttr(o.GetAttr()), how(o))
		if o.GetLogKey() != "" {
			fmt.Fprintf(&b, " (see %s)", bus.Truncate(bus.LogURL(logBaseURL, o.GetLogKey()), maxAttrBytes))
		}
		b.WriteByte('\n')
	}
	total := max(int(v.GetFailedCount()+v.GetSkippedCount()), len(v.GetFailed()))
	if rest := total - listed; rest > 0 {
		fmt.Fprintf(&b, " … and %d more\n", rest)
	}
	return b.String()
}

func how(o *nixbuspb.JobOutcome) string {
	reason := oneLine(o.GetReason())
	switch o.GetFailure() {
	case nixbuspb.FailureKind_FAILURE_KIND_EVAL:
		return "evaluation error: " + reason
	case nixbuspb.FailureKind_FAILURE_KIND_TIMEOUT:
		return "timed out: " + reason
	case nixbuspb.FailureKind_FAILURE_KIND_DEPENDENCY, nixbuspb.FailureKind_FAILURE_KIND_CACHED:
		// "dependency X failed", "failed in an earlier build (cached
		// failure): …": they say what happened.
		return reason
	default:
		if reason == "" {
			return "build failed"
		}
		return "build failed: " + reason
	}
}

// oneLine keeps a reason to its first lines: a review lists jobs, it is not
// a log, and the link has the rest. Control characters are escaped
// (printable.Line): no ESC or BEL from a flake reaches a review raw.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = append(lines[:3], "…")
	}
	return bus.Truncate(printable.Line(strings.Join(lines, " / ")), 500)
}

// shownAttr is an attribute name as a review shows it: printable, bounded.
func shownAttr(attr string) string {
	return bus.Truncate(printable.Line(attr), maxAttrBytes)
}
