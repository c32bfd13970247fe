package drv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ParseShowDerivation reads the JSON `nix show-derivation -r` (nix < 2.15) or
// `nix derivation show -r` prints: an object keyed by derivation path whose
// values hold "inputDrvs". Newer nix keys derivations (and inputDrvs) by
// basename; those are normalised to full /nix/store paths. Only inputDrvs
// is kept: the rest (env, args, outputs) is skipped without being decoded,
// and the input is read as a stream, so memory stays proportional to the
// graph, not to the JSON.
func ParseShowDerivation(r io.Reader) (MapGraph, error) {
	// A file's size gives a fair guess of the derivation count (a few
	// hundred bytes to a few KiB each), which saves growing the maps.
	hint := 1 << 12
	if f, ok := r.(interface{ Stat() (os.FileInfo, error) }); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			hint = int(min(max(fi.Size()/1024, int64(hint)), 1<<22))
		}
	}
	p := &showParser{s: scanner{r: r, buf: make([]byte, 0, 256<<10), quoteAt: -1}, intern: make(map[string]string, 2*hint), hint: hint}
	g, err := p.parse()
	if err != nil {
		return nil, fmt.Errorf("parse derivations JSON at byte %d: %w", p.s.offset(), err)
	}
	return g, nil
}

type showParser struct {
	s       scanner
	scratch []byte
	inputs  []string // reused while reading one inputDrvs
	intern  map[string]string
	hint    int
	// Indexed mode: paths are numbered in ig, inputs collected in ids.
	ig   *IndexedGraph
	ids  []int32
	full []byte
}

// ParseShowDerivationIndexed reads the same JSON as ParseShowDerivation
// into an IndexedGraph, which Reduce walks without string lookups.
func ParseShowDerivationIndexed(r io.Reader) (*IndexedGraph, error) {
	hint := 1 << 12
	if f, ok := r.(interface{ Stat() (os.FileInfo, error) }); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			hint = int(min(max(fi.Size()/1024, int64(hint)), 1<<22))
		}
	}
	p := &showParser{s: scanner{r: r, buf: make([]byte, 0, 256<<10), quoteAt: -1}, ig: newIndexedGraph(2 * hint)}
	// Derivations take a few hundred bytes of JSON, an input edge ~60.
	p.ig.inputs = make([]int32, 0, hint*1024/128)
	if err := p.parseIndexed(); err != nil {
		return nil, fmt.Errorf("parse derivations JSON at byte %d: %w", p.s.offset(), err)
	}
	return p.ig, nil
}

func (p *showParser) parseIndexed() error {
	if err := p.s.expect('{'); err != nil {
		return err
	}
	if ok, err := p.s.consumeIf('}'); err != nil || ok {
		return p.end(err)
	}
	for {
		n, err := p.pathID()
		if err != nil {
			return err
		}
		if err := p.s.expect(':'); err != nil {
			return err
		}
		p.ids = p.ids[:0]
		if _, err := p.derivation(); err != nil {
			return fmt.Errorf("derivation %s: %w", p.ig.paths[n], err)
		}
		p.ig.setInputs(n, p.ids)
		more, err := p.s.next('}')
		if err != nil {
			return err
		}
		if !more {
			return p.end(nil)
		}
	}
}

// pathID reads a JSON string holding a derivation path and numbers it.
func (p *showParser) pathID() (int32, error) {
	var err error
	p.scratch, err = p.s.str(p.scratch[:0])
	if err != nil {
		return 0, err
	}
	if len(p.scratch) > 0 && p.scratch[0] == '/' {
		return p.ig.idBytes(p.scratch), nil
	}
	p.full = append(append(append(p.full[:0], DefaultStoreDir...), '/'), p.scratch...)
	return p.ig.idBytes(p.full), nil
}

func (p *showParser) parse() (MapGraph, error) {
	g := make(MapGraph, p.hint)
	if err := p.s.expect('{'); err != nil {
		return nil, err
	}
	if ok, err := p.s.consumeIf('}'); err != nil || ok {
		return g, p.end(err)
	}
	for {
		path, err := p.path()
		if err != nil {
			return nil, err
		}
		if err := p.s.expect(':'); err != nil {
			return nil, err
		}
		inputs, err := p.derivation()
		if err != nil {
			return nil, fmt.Errorf("derivation %s: %w", path, err)
		}
		g[path] = inputs
		more, err := p.s.next('}')
		if err != nil {
			return nil, err
		}
		if !more {
			return g, p.end(nil)
		}
	}
}

// end accepts only white space after the top-level object.
func (p *showParser) end(err error) error {
	if err != nil {
		return err
	}
	c, err := p.s.peek()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("unexpected %q after the derivations object", c)
}

// path reads a JSON string holding a derivation path, interned so that every
// mention of one derivation shares one string.
func (p *showParser) path() (string, error) {
	var err error
	p.scratch, err = p.s.str(p.scratch[:0])
	if err != nil {
		return "", err
	}
	if s, ok := p.intern[string(p.scratch)]; ok {
		return s, nil
	}
	s := normalise(string(p.scratch))
	p.intern[string(p.scratch)] = s
	return s, nil
}

// derivation reads one derivation object, keeping only the inputDrvs keys.
func (p *showParser) derivation() ([]string, error) {
	if err := p.s.expect('{'); err != nil {
		return nil, err
	}
	if ok, err := p.s.consumeIf('}'); err != nil || ok {
		return nil, err
	}
	var inputs []string
	for {
		var err error
		p.scratch, err = p.s.str(p.scratch[:0])
		if err != nil {
			return nil, err
		}
		if err := p.s.expect(':'); err != nil {
			return nil, err
		}
		if string(p.scratch) == "inputDrvs" {
			if inputs, err = p.inputDrvs(); err != nil {
				return nil, fmt.Errorf("inputDrvs: %w", err)
			}
		} else if err := p.s.skipValue(); err != nil {
			return nil, err
		}
		more, err := p.s.next('}')
		if err != nil {
			return nil, err
		}
		if !more {
			return inputs, nil
		}
	}
}

// inputDrvs reads {"<drv>": ["out"], ...} (or, on newer nix,
// {"<drv>": {"outputs": [...], "dynamicOutputs": {...}}}).
func (p *showParser) inputDrvs() ([]string, error) {
	if err := p.s.expect('{'); err != nil {
		return nil, err
	}
	if ok, err := p.s.consumeIf('}'); err != nil || ok {
		return nil, err
	}
	p.inputs = p.inputs[:0]
	for {
		var path string
		var err error
		if p.ig != nil {
			var id int32
			id, err = p.pathID()
			p.ids = append(p.ids, id)
		} else {
			path, err = p.path()
		}
		if err != nil {
			return nil, err
		}
		if err := p.s.expect(':'); err != nil {
			return nil, err
		}
		if err := p.s.skipValue(); err != nil {
			return nil, err
		}
		if p.ig == nil {
			p.inputs = append(p.inputs, path)
		}
		more, err := p.s.next('}')
		if err != nil {
			return nil, err
		}
		if !more && p.ig != nil {
			return nil, nil
		}
		if !more {
			// One exact allocation per derivation.
			return append([]string(nil), p.inputs...), nil
		}
	}
}

// scanner is a minimal streaming JSON tokenizer: just enough structure to
// walk objects and skip values fast.
type scanner struct {
	r        io.Reader
	buf      []byte
	pos      int
	consumed int64 // bytes dropped from buf before pos 0
	quoteAt  int64 // offset of the next '"' special found, or -1
	err      error
}

func (s *scanner) offset() int64 { return s.consumed + int64(s.pos) }

// fill reads more input; it returns false when none is left.
func (s *scanner) fill() bool {
	if s.err != nil {
		return false
	}
	if s.pos > 0 {
		n := copy(s.buf, s.buf[s.pos:])
		s.consumed += int64(s.pos)
		s.buf = s.buf[:n]
		s.pos = 0
	}
	if len(s.buf) == cap(s.buf) {
		nb := make([]byte, len(s.buf), 2*cap(s.buf))
		copy(nb, s.buf)
		s.buf = nb
	}
	for {
		n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		if err != nil {
			s.err = err
			return n > 0
		}
		if n > 0 {
			return true
		}
	}
}

func (s *scanner) readErr() error {
	if s.err == nil || errors.Is(s.err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return s.err
}

// peek returns the next byte that is not white space, without consuming it.
// At the end of input it returns io.EOF (or the read error).
func (s *scanner) peek() (byte, error) {
	for {
		for s.pos < len(s.buf) {
			switch c := s.buf[s.pos]; c {
			case ' ', '\t', '\n', '\r':
				s.pos++
			default:
				return c, nil
			}
		}
		if !s.fill() {
			if s.err == nil || errors.Is(s.err, io.EOF) {
				return 0, io.EOF
			}
			return 0, s.err
		}
	}
}

func (s *scanner) expect(want byte) error {
	c, err := s.peek()
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	if c != want {
		return fmt.Errorf("expected %q, found %q", want, c)
	}
	s.pos++
	return nil
}

func (s *scanner) consumeIf(want byte) (bool, error) {
	c, err := s.peek()
	if errors.Is(err, io.EOF) {
		return false, io.ErrUnexpectedEOF
	}
	if err != nil {
		return false, err
	}
	if c == want {
		s.pos++
		return true, nil
	}
	return false, nil
}

// next reads the separator after a member: ',' (more follow) or closer.
func (s *scanner) next(closer byte) (bool, error) {
	c, err := s.peek()
	if errors.Is(err, io.EOF) {
		return false, io.ErrUnexpectedEOF
	}
	if err != nil {
		return false, err
	}
	s.pos++
	switch c {
	case ',':
		return true, nil
	case closer:
		return false, nil
	}
	return false, fmt.Errorf("expected ',' or %q, found %q", closer, c)
}

// str reads a JSON string, appending its decoded value to dst.
func (s *scanner) str(dst []byte) ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return dst, err
	}
	for {
		i := s.special()
		if i < 0 {
			dst = append(dst, s.buf[s.pos:]...)
			s.pos = len(s.buf)
			if !s.fill() {
				return dst, s.readErr()
			}
			continue
		}
		dst = append(dst, s.buf[s.pos:s.pos+i]...)
		s.pos += i
		if s.buf[s.pos] == '"' {
			s.pos++
			return dst, nil
		}
		var err error
		if dst, err = s.escape(dst); err != nil {
			return dst, err
		}
	}
}

// escape decodes the escape sequence at pos (a backslash).
func (s *scanner) escape(dst []byte) ([]byte, error) {
	if !s.want(2) {
		return dst, s.readErr()
	}
	c := s.buf[s.pos+1]
	s.pos += 2
	switch c {
	case '"', '\\', '/':
		return append(dst, c), nil
	case 'b':
		return append(dst, '\b'), nil
	case 'f':
		return append(dst, '\f'), nil
	case 'n':
		return append(dst, '\n'), nil
	case 'r':
		return append(dst, '\r'), nil
	case 't':
		return append(dst, '\t'), nil
	case 'u':
		r, err := s.hex4()
		if err != nil {
			return dst, err
		}
		if utf16.IsSurrogate(r) {
			if s.want(6) && s.buf[s.pos] == '\\' && s.buf[s.pos+1] == 'u' {
				s.pos += 2
				r2, err := s.hex4()
				if err != nil {
					return dst, err
				}
				r = utf16.DecodeRune(r, r2)
			} else {
				r = utf8.RuneError
			}
		}
		return utf8.AppendRune(dst, r), nil
	}
	return dst, fmt.Errorf("invalid escape \\%c", c)
}

func (s *scanner) hex4() (rune, error) {
	if !s.want(4) {
		return 0, s.readErr()
	}
	v, err := strconv.ParseUint(string(s.buf[s.pos:s.pos+4]), 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid \\u escape %q", s.buf[s.pos:s.pos+4])
	}
	s.pos += 4
	return rune(v), nil
}

// want makes n bytes available at pos, if the input has them.
func (s *scanner) want(n int) bool {
	for len(s.buf)-s.pos < n {
		if !s.fill() {
			return false
		}
	}
	return true
}

// skipValue skips one JSON value of any kind without decoding it.
func (s *scanner) skipValue() error {
	c, err := s.peek()
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	switch c {
	case '"':
		return s.skipString()
	case '{', '[':
		return s.skipNested()
	case '}', ']', ',', ':':
		return fmt.Errorf("expected a value, found %q", c)
	}
	// A number, true, false or null: everything up to a delimiter.
	for {
		for s.pos < len(s.buf) {
			switch s.buf[s.pos] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return nil
			case '"', '{', '[', ':':
				return fmt.Errorf("unexpected %q in a literal", s.buf[s.pos])
			}
			s.pos++
		}
		if !s.fill() {
			return nil
		}
	}
}

// skipString skips a string starting at pos (a quote).
func (s *scanner) skipString() error {
	s.pos++
	for {
		i := s.special()
		if i < 0 {
			s.pos = len(s.buf)
			if !s.fill() {
				return s.readErr()
			}
			continue
		}
		s.pos += i
		if s.buf[s.pos] == '"' {
			s.pos++
			return nil
		}
		if !s.want(2) {
			return s.readErr()
		}
		s.pos += 2
	}
}

// skipNested skips an object or array starting at pos, matching brackets.
func (s *scanner) skipNested() error {
	var stack []byte
	for {
		for s.pos < len(s.buf) {
			c := s.buf[s.pos]
			switch c {
			case '"':
				if err := s.skipString(); err != nil {
					return err
				}
				continue
			case '{', '[':
				stack = append(stack, c)
			case '}', ']':
				if len(stack) == 0 || (c == '}') != (stack[len(stack)-1] == '{') {
					return fmt.Errorf("unbalanced %q", c)
				}
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					s.pos++
					return nil
				}
			}
			s.pos++
		}
		if !s.fill() {
			return s.readErr()
		}
	}
}

// special returns the offset from pos of the next '"' or '\\' in the
// buffer, or -1. It remembers where the next quote is, so that a long
// string with many escapes is still scanned once, and uses vectorised
// IndexByte rather than IndexAny, which goes byte by byte.
func (s *scanner) special() int {
	rest := s.buf[s.pos:]
	q := -1
	if off := s.offset(); s.quoteAt >= off {
		q = int(s.quoteAt - off)
	} else if i := bytes.IndexByte(rest, '"'); i >= 0 {
		q = i
		s.quoteAt = off + int64(i)
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
