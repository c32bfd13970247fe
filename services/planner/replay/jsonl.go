package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// evalJob is what replay needs of one nix-eval-jobs line (outputs, name,
// inputDrvs and the rest are skipped).
type evalJob struct {
	Attr        string
	AttrPath    []string
	DrvPath     string
	System      string
	IsCached    bool
	CacheStatus string
	Error       string
}

// decodeJobLine reads one nix-eval-jobs line. It is a small JSON object
// reader that decodes only the fields above and skips the rest without
// allocating: encoding/json spent most of replay's time here.
func decodeJobLine(line []byte, j *evalJob) error {
	d := lineDecoder{b: line, quoteAt: -1}
	if err := d.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "attr":
			j.Attr, err = d.str()
		case "attrPath":
			j.AttrPath, err = d.strs()
		case "drvPath":
			j.DrvPath, err = d.str()
		case "system":
			j.System, err = d.str()
		case "isCached":
			j.IsCached, err = d.boolean()
		case "cacheStatus":
			j.CacheStatus, err = d.str()
		case "error":
			j.Error, err = d.str()
		default:
			err = d.skip()
		}
		return err
	}); err != nil {
		return err
	}
	d.ws()
	if d.pos != len(d.b) {
		return fmt.Errorf("unexpected %q after the object", d.b[d.pos])
	}
	return nil
}

type lineDecoder struct {
	b       []byte
	pos     int
	quoteAt int // where special found the next '"'; -1: not known
}

var errEOL = errors.New("unexpected end of line")

func (d *lineDecoder) ws() {
	for d.pos < len(d.b) {
		switch d.b[d.pos] {
		case ' ', '\t', '\r', '\n':
			d.pos++
		default:
			return
		}
	}
}

func (d *lineDecoder) peek() (byte, error) {
	d.ws()
	if d.pos >= len(d.b) {
		return 0, errEOL
	}
	return d.b[d.pos], nil
}

func (d *lineDecoder) expect(c byte) error {
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
func (d *lineDecoder) object(member func(key []byte) error) error {
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
			// An escaped key is none of ours.
			key = nil
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
func (d *lineDecoder) rawStr() ([]byte, error) {
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

func (d *lineDecoder) str() (string, error) {
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
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

func (d *lineDecoder) strs() ([]string, error) {
	if err := d.expect('['); err != nil {
		return nil, err
	}
	var out []string
	if c, err := d.peek(); err != nil {
		return nil, err
	} else if c == ']' {
		d.pos++
		return out, nil
	}
	for {
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
		c, err := d.peek()
		if err != nil {
			return nil, err
		}
		d.pos++
		switch c {
		case ',':
		case ']':
			return out, nil
		default:
			return nil, fmt.Errorf("expected ',' or ']', found %q", c)
		}
	}
}

func (d *lineDecoder) boolean() (bool, error) {
	c, err := d.peek()
	if err != nil {
		return false, err
	}
	switch c {
	case 't':
		return true, d.literal("true")
	case 'f':
		return false, d.literal("false")
	case 'n':
		return false, d.literal("null")
	}
	return false, fmt.Errorf("expected a boolean, found %q", c)
}

func (d *lineDecoder) literal(lit string) error {
	if !bytes.HasPrefix(d.b[d.pos:], []byte(lit)) {
		return fmt.Errorf("expected %s", lit)
	}
	d.pos += len(lit)
	return nil
}

// skip skips one value of any kind.
func (d *lineDecoder) skip() error {
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
	start := d.pos
	for d.pos < len(d.b) {
		switch d.b[d.pos] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			if d.pos == start {
				return fmt.Errorf("expected a value")
			}
			return nil
		}
		d.pos++
	}
	return nil
}

// special returns the offset from pos of the next '"' or '\\', or -1,
// remembering where the next quote is so that a long string with many
// escapes is scanned once.
func (d *lineDecoder) special() int {
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
