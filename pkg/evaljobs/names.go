package evaljobs

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/printable"
)

// identifier reports whether s is a plain Nix identifier,
// [a-zA-Z_][a-zA-Z0-9_'-]*, which Nix prints unquoted.
func identifier(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '\'' || c == '-'):
		default:
			return false
		}
	}
	return s != ""
}

// AttrName joins an attribute path the way Nix shows one: plain
// identifiers as they are, any other name quoted (printable.Quote), so
// that bytes that are not UTF-8 and control characters are escaped
// (\xNN). Distinct paths always give distinct names: two attributes are
// never taken for one, however hostile their names.
//
// A name longer than MaxAttrBytes is cut there and ends with a hash of the
// whole name, which keeps it unique and every message that carries it
// within the bus limit.
func AttrName(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if i > 0 {
			b.WriteByte('.')
		}
		if identifier(p) {
			b.WriteString(p)
		} else {
			b.WriteString(printable.Quote(p))
		}
	}
	if b.Len() <= MaxAttrBytes {
		return b.String()
	}
	name := b.String()
	sum := sha256.Sum256([]byte(name))
	return bus.Truncate(name, MaxAttrBytes-80) + " (sha256 " + hex.EncodeToString(sum[:]) + ")"
}

// MaxAttrBytes bounds a job's attribute name (AttrName).
const MaxAttrBytes = 4096

// ShownPath is path as the bus carries it (protobuf strings are UTF-8):
// names that are UTF-8 exactly as they are, others quoted as AttrName
// quotes them. What identifies a job, and what a reader is shown, is its
// AttrName.
func ShownPath(path []string) []string {
	out := make([]string, len(path))
	for i, p := range path {
		if utf8.ValidString(p) {
			out[i] = p
		} else {
			out[i] = printable.Quote(p)
		}
	}
	return out
}
