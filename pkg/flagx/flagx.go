// Package flagx holds what the services' flags share.
package flagx

import "strings"

// Split reads a comma-separated flag value: items trimmed, empty ones
// dropped (nil when none is left).
func Split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
