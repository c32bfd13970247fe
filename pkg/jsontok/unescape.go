package jsontok

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// unescape appends the value of the string raw (as written between its
// quotes, escapes already checked by the scanner) to dst. Bytes that are
// not escapes are copied as they are, UTF-8 or not. \u escapes decode as
// encoding/json decodes them: a surrogate pair to its rune, any other
// surrogate to U+FFFD.
func unescape(dst, raw []byte) []byte {
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\\')
		if i < 0 {
			return append(dst, raw...)
		}
		dst = append(dst, raw[:i]...)
		raw = raw[i:]
		c := raw[1]
		if c != 'u' {
			dst = append(dst, simpleEscape[c])
			raw = raw[2:]
			continue
		}
		r, _ := hex4(raw[2:])
		raw = raw[6:]
		if utf16.IsSurrogate(r) {
			r2 := rune(-1)
			if len(raw) >= 6 && raw[0] == '\\' && raw[1] == 'u' {
				r2, _ = hex4(raw[2:])
			}
			if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
				dst = utf8.AppendRune(dst, dec)
				raw = raw[6:]
				continue
			}
			r = utf8.RuneError
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

// simpleEscape maps the byte after a backslash to what it stands for.
var simpleEscape = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// hex4 reads four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
