// Package printable makes text from untrusted sources (attribute names,
// evaluation and build errors, messages) safe to show in a review, a log
// line or a web page: no terminal control sequence, no bell, no invalid
// UTF-8 reaches a reader raw.
//
// Text escapes C0 and C1 control characters (except newline and tab), DEL
// and bytes that are not UTF-8 as \xNN or \u00NN, for free text. Quote
// makes a name: quoted, with its backslashes and quotes escaped too, so that
// distinct names always stay distinct (Quote is injective).
package printable

import (
	"strings"
	"unicode/utf8"
)

const hex = "0123456789abcdef"

// control reports whether r is a C0 or C1 control character or DEL.
func control(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }

// unsafe reports whether s needs escaping as free text.
func unsafe(s string, keepLines bool) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if control(rune(c)) && !(keepLines && (c == '\n' || c == '\t')) {
				return true
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || control(r) {
			return true
		}
		i += n
	}
	return false
}

// Text returns s with every control character but newline and tab, and
// every byte that is not part of valid UTF-8, escaped: \xNN for a byte
// (a C0 control, DEL or an invalid byte) and \u00NN for a C1 control. It
// returns s itself when nothing needs escaping.
func Text(s string) string {
	if !unsafe(s, true) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	write(&b, s, true, false)
	return b.String()
}

// Line is Text that escapes newlines and tabs too: for text that must stay
// on one line.
func Line(s string) string {
	if !unsafe(s, false) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	write(&b, s, false, false)
	return b.String()
}

// Quote returns s in double quotes with \ " and $ escaped, newline, return
// and tab as \n \r \t, and other controls and invalid bytes as Text
// escapes them. Distinct strings give distinct quotes, and the quote is
// valid, printable UTF-8 on one line. For valid UTF-8 without controls
// the result reads as the Nix string literal of s.
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	write(&b, s, false, true)
	b.WriteByte('"')
	return b.String()
}

func write(b *strings.Builder, s string, keepLines, quote bool) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case quote && (c == '\\' || c == '"' || c == '$'):
				b.WriteByte('\\')
				b.WriteByte(c)
			case keepLines && (c == '\n' || c == '\t'):
				b.WriteByte(c)
			case quote && c == '\n':
				b.WriteString(`\n`)
			case quote && c == '\r':
				b.WriteString(`\r`)
			case quote && c == '\t':
				b.WriteString(`\t`)
			case control(rune(c)):
				byteEscape(b, c)
			default:
				b.WriteByte(c)
			}
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			byteEscape(b, c)
		case control(r):
			b.WriteString(`\u00`)
			b.WriteByte(hex[r>>4])
			b.WriteByte(hex[r&0xf])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
}

func byteEscape(b *strings.Builder, c byte) {
	b.WriteString(`\x`)
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&0xf])
}

// Cut cuts s to at most n bytes, mark (which says text was cut) included,
// without splitting a UTF-8 sequence; s shorter than n is returned as is,
// and "" when n leaves no room for mark. It is the one truncation of free
// text: bus.Truncate and gerrit.TruncateMessage are Cut with their marks.
func Cut(s string, n int, mark string) string {
	if len(s) <= n {
		return s
	}
	n -= len(mark)
	if n < 0 {
		return ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}
