package cacheuploader

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxNameLen bounds the readable part of a safe name, so that an
// attribute, an output and a temporary suffix fit in one file name
// (255 bytes).
const maxNameLen = 80

// safeName maps an untrusted name (a project, an attribute, an output) to
// one path component: never empty, ".", ".." or hidden, without '/', NUL
// or control characters. ASCII letters, digits and "._-+=" are kept, so
// ordinary names stay as they are; anything else becomes '_'. When a
// character was replaced or the name shortened, "~" and a hash of the
// whole original name are appended. A kept name never holds '~', so a
// name that was changed cannot meet one that was not, and two changed
// names meet only if their hashes do.
func safeName(s string) string {
	var b strings.Builder
	changed := false
	for i, r := range s {
		if i == 0 && r == '.' || !keptRune(r) {
			b.WriteByte('_')
			changed = true
			continue
		}
		b.WriteRune(r)
	}
	out := b.String()
	if out == "" {
		out, changed = "_", true
	}
	if len(out) > maxNameLen {
		out, changed = out[:maxNameLen], true
	}
	if changed {
		sum := sha256.Sum256([]byte(s))
		out += "~" + hex.EncodeToString(sum[:6])
	}
	return out
}

func keptRune(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("._-+=", r)
}

// linkName names the link to one output of an attribute: the attribute
// for "out", <attribute>-<output> for the others.
func linkName(attr, output string) string {
	if output == "out" {
		return safeName(attr)
	}
	return safeName(attr) + "-" + safeName(output)
}
