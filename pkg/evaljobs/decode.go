package evaljobs

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// decoder is a small JSON object reader for one nix-eval-jobs line. It
// decodes only the fields a job needs and skips the rest without
// allocating: encoding/json took most of the time of reading 100,000 jobs.
type decoder struct {
	b       []byte
	pos     int
	quoteAt int // where special found the next '"'; -1: not known
}

var errEOL = errors.New("unexpected end of line")

func (d *decoder) ws() {
	for d.pos < len(d.b) {
		switch d.b[d.pos] {
		case ' ', '\t', '\r', '\n':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) peek() (byte, error) {
	d.ws()
	if d.pos >= len(d.b) {
		return 0, errEOL
	}
	return d.b[d.pos], nil
}

func (d *decoder) expect(c byte) error {
	got, err := d.peek()
	if err != nil {
		return err
	}
	if got != c {
		return fmt.Errorf("expected %q, found %q", c, got)
	}
	d.pos++
	return nil
}

// object reads {"key": value, ...}, calling member with each key (valid
// until the next read) to read the value.
func (d *decoder) object(member func(key []byte) error) error {
	if err := d.expect('{'); err != nil {
		return err
	}
	if c, err := d.peek(); err != nil {
		return err
	} else if c == '}' {
		d.pos++
		return nil
	}
	for {
		key, err := d.rawStr()
		if err != nil {
			return err
		}
		if bytes.IndexByte(key, '\\') >= 0 {
			// Rare: decode the escapes (this allocates).
			k, err := unquote(key)
			if err != nil {
				return err
			}
			key = []byte(k)
		} else {
			key = key[1 : len(key)-1]
		}
		if err := d.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		c, err := d.peek()
		if err != nil {
			return err
		}
		d.pos++
		switch c {
		case ',':
		case '}':
			return nil
		default:
			return fmt.Errorf("expected ',' or '}', found %q", c)
		}
	}
}

// rawStr returns the next string token with its quotes, undecoded.
func (d *decoder) rawStr() ([]byte, error) {
	if err := d.expect('"'); err != nil {
		return nil, err
	}
	start := d.pos - 1
	for d.pos < len(d.b) {
		i := d.special()
		if i < 0 {
			break
		}
		d.pos += i
		if d.b[d.pos] == '"' {
			d.pos++
			return d.b[start:d.pos], nil
		}
		d.pos += 2 // an escape: skip the escaped byte
	}
	return nil, errEOL
}

func (d *decoder) str() (string, error) {
	if c, err := d.peek(); err == nil && c == 'n' {
		return "", d.literal("null")
	}
	raw, err := d.rawStr()
	if err != nil {
		return "", err
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), nil
	}
	return unquote(raw)
}

// unquote decodes a JSON string token (with its quotes) byte for byte:
// unlike encoding/json it keeps bytes that are not UTF-8, which Nix prints
// raw in attribute names, so that distinct names stay distinct. A lone
// surrogate escape becomes U+FFFD, as in encoding/json.
func unquote(raw []byte) (string, error) {
	in := raw[1 : len(raw)-1]
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(in) {
			return "", errEOL
		}
		switch in[i] {
		case '"', '\\', '/':
			out = append(out, in[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(in[i+1:])
			if !ok {
				return "", errors.New("bad \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(-1), false
				if i+2 < len(in) && in[i+1] == '\\' && in[i+2] == 'u' {
					r2, ok = hex4(in[i+3:])
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", fmt.Errorf("bad escape \\%c", in[i])
		}
	}
	return string(out), nil
}

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

func (d *decoder) literal(lit string) error {
	if !bytes.HasPrefix(d.b[d.pos:], []byte(lit)) {
		return fmt.Errorf("expected %s", lit)
	}
	d.pos += len(lit)
	return nil
}

// skip skips one value of any kind.
func (d *decoder) skip() error {
	c, err := d.peek()
	if err != nil {
		return err
	}
	switch c {
	case '"':
		_, err := d.rawStr()
		return err
	case '{', '[':
		depth := 0
		for d.pos < len(d.b) {
			switch d.b[d.pos] {
			case '"':
				if _, err := d.rawStr(); err != nil {
					return err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					d.pos++
					return nil
				}
			}
			d.pos++
		}
		return errEOL
	case '}', ']', ',', ':':
		return fmt.Errorf("expected a value, found %q", c)
	}
	switch c {
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	start := d.pos
	for d.pos < len(d.b) && strings.IndexByte("-+.0123456789eE", d.b[d.pos]) >= 0 {
		d.pos++
	}
	if d.pos == start {
		return fmt.Errorf("expected a value, found %q", c)
	}
	return nil
}

// special returns the offset from pos of the next '"' or '\\', or -1,
// remembering where the next quote is so that a long string with many
// escapes is scanned once.
func (d *decoder) special() int {
	rest := d.b[d.pos:]
	q := -1
	if d.quoteAt >= d.pos {
		q = d.quoteAt - d.pos
	} else if i := bytes.IndexByte(rest, '"'); i >= 0 {
		q = i
		d.quoteAt = d.pos + i
	}
	end := len(rest)
	if q >= 0 {
		end = q
	}
	if e := bytes.IndexByte(rest[:end], '\\'); e >= 0 {
		return e
	}
	return q
}

// notNull reports whether the next value is not null, consuming a null.
func (d *decoder) notNull() (bool, error) {
	c, err := d.peek()
	if err != nil {
		return false, err
	}
	if c == 'n' {
		return false, d.literal("null")
	}
	return true, nil
}

// optStr reads a string; a value of another type is skipped (ok false).
func (d *decoder) optStr() (s string, ok bool, err error) {
	c, err := d.peek()
	if err != nil {
		return "", false, err
	}
	if c != '"' {
		return "", false, d.skip()
	}
	s, err = d.str()
	return s, err == nil, err
}

// optStrs reads a non-empty array of strings; anything else is skipped
// and gives nil.
func (d *decoder) optStrs() ([]string, error) {
	if c, err := d.peek(); err != nil || c != '[' {
		if err != nil {
			return nil, err
		}
		return nil, d.skip()
	}
	d.pos++
	var out []string
	valid := true
	for {
		c, err := d.peek()
		if err != nil {
			return nil, err
		}
		if c == ']' && len(out) == 0 && valid {
			d.pos++
			return nil, nil
		}
		if c == '"' {
			s, err := d.str()
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		} else if err := d.skip(); err != nil {
			return nil, err
		} else {
			valid = false
		}
		if c, err = d.peek(); err != nil {
			return nil, err
		}
		d.pos++
		switch c {
		case ',':
		case ']':
			if !valid {
				return nil, nil
			}
			return out, nil
		default:
			return nil, fmt.Errorf("expected ',' or ']', found %q", c)
		}
	}
}

// optBool reads true or false; a value of another type is skipped.
func (d *decoder) optBool() (v, ok bool, err error) {
	c, err := d.peek()
	if err != nil {
		return false, false, err
	}
	switch c {
	case 't':
		return true, true, d.literal("true")
	case 'f':
		return false, true, d.literal("false")
	}
	return false, false, d.skip()
}

// optOutputs reads {"<output>": "<path>" | null, ...}; anything else, or
// an object with a value of another type, is skipped and gives nil.
func (d *decoder) optOutputs() (map[string]string, error) {
	if c, err := d.peek(); err != nil || c != '{' {
		if err != nil {
			return nil, err
		}
		return nil, d.skip()
	}
	out := map[string]string{}
	valid := true
	err := d.object(func(key []byte) error {
		name := string(key)
		notNull, err := d.notNull()
		if err != nil || !notNull {
			out[name] = ""
			return err
		}
		p, ok, err := d.optStr()
		valid = valid && ok
		out[name] = p
		return err
	})
	if err != nil || !valid {
		return nil, err
	}
	return out, nil
}
