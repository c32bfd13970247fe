// Package jsontok is the one JSON tokenizer behind nixbus's hand-written
// readers (`nix show-derivation` output, nix-eval-jobs lines, `nix eval
// --json`): a streaming scanner over an io.Reader or a []byte that yields
// tokens without building values, checks the whole grammar as
// encoding/json does, and bounds nesting depth and token size.
//
// Strings are given as bytes, unescaped losslessly: bytes that are not
// UTF-8 (which Nix prints raw in attribute names) are kept as they are,
// where encoding/json would replace each with U+FFFD and so merge
// distinct names. Escapes decode as in encoding/json (a lone surrogate
// becomes U+FFFD). On input that is valid UTF-8 the tokens and the
// verdict (accepted or not) are encoding/json's.
//
// A value is skipped (Skip) without being held in memory, however large.
package jsontok

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Kind is the kind of a token.
type Kind uint8

// The kinds of token. Key is a string naming an object member (its ':'
// is consumed with it); String is a string value.
const (
	// End: the top-level value is complete and only white space followed.
	End Kind = iota
	ObjectStart
	ObjectEnd
	ArrayStart
	ArrayEnd
	Key
	String
	Number
	True
	False
	Null
)

var kindNames = [...]string{"end of input", "'{'", "'}'", "'['", "']'", "key", "string", "number", "true", "false", "null"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Defaults for Limits left zero.
const (
	DefaultMaxDepth = 1000
	DefaultMaxToken = 64 << 20
)

// Limits bound what a Scanner holds.
type Limits struct {
	// MaxDepth bounds the nesting of objects and arrays.
	MaxDepth int
	// MaxToken bounds the bytes of one string (as written, escapes
	// included) or number that is read; skipped strings are not held and
	// not bounded.
	MaxToken int
}

// Errors a SyntaxError may wrap besides io.ErrUnexpectedEOF (truncated
// input) and the reader's own error.
var (
	ErrTooDeep = errors.New("nesting too deep")
	ErrTooLong = errors.New("token too long")
)

// SyntaxError says where the input stopped being JSON this scanner takes.
type SyntaxError struct {
	// Offset is the byte of the input where the problem was found.
	Offset int64
	msg    string
	err    error
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("JSON at byte %d: %s", e.Offset, e.msg) }

// Unwrap gives io.ErrUnexpectedEOF, ErrTooDeep, ErrTooLong or a read
// error, when the error is one of those.
func (e *SyntaxError) Unwrap() error { return e.err }

// state says what may come next.
type state uint8

const (
	stValue    state = iota // a value (top level, after ':')
	stDone                  // only white space
	stObjFirst              // a key or '}'
	stKey                   // a key (after ',')
	stObjNext               // ',' or '}'
	stArrFirst              // a value or ']'
	stElem                  // a value (after ',')
	stArrNext               // ',' or ']'
)

// Scanner reads one JSON value token by token. It is not safe for
// concurrent use.
type Scanner struct {
	r    io.Reader
	rerr error // io.EOF or the read error, once the reader returned one
	buf  []byte
	pos  int   // next unread byte of buf
	base int64 // input offset of buf[0]
	lim  Limits

	state state
	// Open containers: bit d of objs (d < 64) or of deep[d/64-1] is set
	// when the container at depth d is an object.
	depth int
	objs  uint64
	deep  []uint64

	// The last String, Key or Number read: buf[tokStart:tokEnd] as written
	// (strings without their quotes); esc: it holds escapes.
	tokStart, tokEnd int
	esc              bool
	hold             bool // fill keeps the token too
	scratch          []byte

	err error // sticky: once an error, always that error
}

const readSize = 256 << 10

// NewReader scans the JSON value r holds, reading it in chunks.
func NewReader(r io.Reader, lim Limits) *Scanner {
	s := &Scanner{}
	s.reset(r, make([]byte, 0, readSize), lim)
	return s
}

// NewBytes scans the JSON value b holds. Tokens' bytes point into b.
func NewBytes(b []byte, lim Limits) *Scanner {
	s := &Scanner{}
	s.ResetBytes(b, lim)
	return s
}

// ResetBytes makes s scan b from its start, as NewBytes(b, lim) would; a
// Scanner (even the zero one) used for line after line saves allocating.
func (s *Scanner) ResetBytes(b []byte, lim Limits) { s.reset(nil, b, lim) }

func (s *Scanner) reset(r io.Reader, b []byte, lim Limits) {
	if lim.MaxDepth <= 0 {
		lim.MaxDepth = DefaultMaxDepth
	}
	if lim.MaxToken <= 0 {
		lim.MaxToken = DefaultMaxToken
	}
	*s = Scanner{r: r, buf: b, lim: lim, deep: s.deep[:0], scratch: s.scratch[:0]}
}

// Offset is the input offset of the next byte to read.
func (s *Scanner) Offset() int64 { return s.base + int64(s.pos) }

// Depth is the number of objects and arrays open.
func (s *Scanner) Depth() int { return s.depth }

func (s *Scanner) push(obj bool) {
	d := s.depth
	word := &s.objs
	if d >= 64 {
		if len(s.deep) < d/64 {
			s.deep = append(s.deep, 0)
		}
		word = &s.deep[d/64-1]
	}
	bit := uint64(1) << (d % 64)
	if obj {
		*word |= bit
	} else {
		*word &^= bit
	}
	s.depth++
}

// inObject reports whether the innermost open container is an object.
func (s *Scanner) inObject() bool {
	d := s.depth - 1
	word := s.objs
	if d >= 64 {
		word = s.deep[d/64-1]
	}
	return word&(1<<(d%64)) != 0
}

// Next reads the next token. After the top-level value it returns End
// (nil error) if only white space follows.
func (s *Scanner) Next() (Kind, error) {
	k, err := s.head()
	if err != nil {
		return k, err
	}
	return k, s.take(k, false)
}

// Peek reports the kind of the next token without reading it.
func (s *Scanner) Peek() (Kind, error) { return s.head() }

// Skip reads the next value, whatever it is, validating it but holding
// none of it.
func (s *Scanner) Skip() error {
	depth := 0
	for {
		k, err := s.head()
		if err != nil {
			return err
		}
		switch k {
		case Key:
			if depth == 0 {
				return s.fail(s.pos, "expected a value, found a key", nil)
			}
		case End, ObjectEnd, ArrayEnd:
			if depth == 0 {
				return s.fail(s.pos, fmt.Sprintf("expected a value, found %s", k), nil)
			}
			depth--
		case ObjectStart, ArrayStart:
			depth++
		}
		if err := s.take(k, true); err != nil {
			return err
		}
		if depth == 0 {
			return nil
		}
	}
}

// Bytes is the value of the last String or Key read (unescaped) or the
// text of the last Number. It is valid until the next call.
func (s *Scanner) Bytes() []byte {
	raw := s.buf[s.tokStart:s.tokEnd]
	if !s.esc {
		return raw
	}
	s.scratch = unescape(s.scratch[:0], raw)
	return s.scratch
}

// Text is Bytes as a string (a copy).
func (s *Scanner) Text() string { return string(s.Bytes()) }

// Expect reads the next token and fails unless it is of kind want.
func (s *Scanner) Expect(want Kind) error {
	at := s.Offset()
	k, err := s.Next()
	if err != nil {
		return err
	}
	if k != want {
		s.err = &SyntaxError{Offset: at, msg: fmt.Sprintf("expected %s, found %s", want, k)}
		return s.err
	}
	return nil
}

// Members reads an object, calling member with each key (valid until
// the next read), which must read or skip the member's value.
func (s *Scanner) Members(member func(key []byte) error) error {
	if err := s.Expect(ObjectStart); err != nil {
		return err
	}
	for {
		k, err := s.Next()
		if err != nil {
			return err
		}
		if k == ObjectEnd {
			return nil
		}
		if k != Key {
			return errors.New("jsontok: a member's value was left unread")
		}
		if err := member(s.Bytes()); err != nil {
			return err
		}
	}
}

// Elements reads an array, calling elem for each element, which it must
// read or skip.
func (s *Scanner) Elements(elem func() error) error {
	if err := s.Expect(ArrayStart); err != nil {
		return err
	}
	for {
		k, err := s.Peek()
		if err != nil {
			return err
		}
		if k == ArrayEnd {
			_, err := s.Next()
			return err
		}
		at := s.Offset()
		if err := elem(); err != nil {
			return err
		}
		if s.Offset() == at {
			return errors.New("jsontok: an array element was left unread")
		}
	}
}

func (s *Scanner) fail(at int, msg string, wrapped error) error {
	s.err = &SyntaxError{Offset: s.base + int64(at), msg: msg, err: wrapped}
	return s.err
}

// truncated is the error for input that ends (or fails) inside a value.
func (s *Scanner) truncated(at int) error {
	if s.rerr != nil && !errors.Is(s.rerr, io.EOF) {
		return s.fail(at, "read: "+s.rerr.Error(), s.rerr)
	}
	return s.fail(at, "unexpected end of input", io.ErrUnexpectedEOF)
}

// fill reads more input after the bytes from pos on (and the token, if
// hold), which it keeps, moving them to the front of the buffer; false
// when no more comes.
func (s *Scanner) fill() bool {
	if s.r == nil || s.rerr != nil {
		return false
	}
	keep := s.pos
	if s.hold {
		keep = min(keep, s.tokStart)
	}
	if keep > 0 {
		n := copy(s.buf, s.buf[keep:])
		s.base += int64(keep)
		s.buf = s.buf[:n]
		s.pos -= keep
		if s.hold {
			s.tokStart, s.tokEnd = s.tokStart-keep, s.tokEnd-keep
		} else {
			s.tokStart, s.tokEnd = 0, 0
		}
	}
	if len(s.buf) == cap(s.buf) {
		nb := make([]byte, len(s.buf), 2*cap(s.buf))
		copy(nb, s.buf)
		s.buf = nb
	}
	// A reader may return 0, nil; bufio gives up after 100 such reads.
	for range 100 {
		n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		if err != nil {
			s.rerr = err
			return n > 0
		}
		if n > 0 {
			return true
		}
	}
	s.rerr = io.ErrNoProgress
	return false
}

// want makes n bytes from pos available, if the input has them.
func (s *Scanner) want(n int) bool {
	for len(s.buf)-s.pos < n {
		if !s.fill() {
			return false
		}
	}
	return true
}

// ws skips white space; false at the end of input.
func (s *Scanner) ws() (byte, bool) {
	for {
		for s.pos < len(s.buf) {
			switch c := s.buf[s.pos]; c {
			case ' ', '\t', '\n', '\r':
				s.pos++
			default:
				return c, true
			}
		}
		if !s.fill() {
			return 0, false
		}
	}
}

// head consumes white space and separators up to the next token and
// tells its kind from its first byte.
func (s *Scanner) head() (Kind, error) {
	if s.err != nil {
		return End, s.err
	}
	for {
		c, ok := s.ws()
		if !ok {
			if s.state == stDone && (s.rerr == nil || errors.Is(s.rerr, io.EOF)) {
				return End, nil
			}
			return End, s.truncated(s.pos)
		}
		switch s.state {
		case stDone:
			return End, s.fail(s.pos, fmt.Sprintf("unexpected %q after the top-level value", c), nil)
		case stObjNext, stArrNext:
			next, end, kind, what := stKey, byte('}'), ObjectEnd, "an object member"
			if s.state == stArrNext {
				next, end, kind, what = stElem, ']', ArrayEnd, "an array element"
			}
			switch c {
			case ',':
				s.pos++
				s.state = next
				continue
			case end:
				return kind, nil
			}
			return End, s.fail(s.pos, fmt.Sprintf("expected ',' or %q after %s, found %q", end, what, c), nil)
		case stObjFirst, stKey:
			if c == '"' {
				return Key, nil
			}
			if c == '}' && s.state == stObjFirst {
				return ObjectEnd, nil
			}
			return End, s.fail(s.pos, fmt.Sprintf("expected a string key, found %q", c), nil)
		case stArrFirst:
			if c == ']' {
				return ArrayEnd, nil
			}
		}
		switch c {
		case '{':
			return ObjectStart, nil
		case '[':
			return ArrayStart, nil
		case '"':
			return String, nil
		case 't':
			return True, nil
		case 'f':
			return False, nil
		case 'n':
			return Null, nil
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			return Number, nil
		}
		return End, s.fail(s.pos, fmt.Sprintf("expected a value, found %q", c), nil)
	}
}

// take reads the token head classified as k.
func (s *Scanner) take(k Kind, skipping bool) error {
	var err error
	switch k {
	case End:
		return nil
	case ObjectStart, ArrayStart:
		if s.depth >= s.lim.MaxDepth {
			return s.fail(s.pos, fmt.Sprintf("more than %d nested objects and arrays", s.lim.MaxDepth), ErrTooDeep)
		}
		s.pos++
		s.push(k == ObjectStart)
		if k == ObjectStart {
			s.state = stObjFirst
		} else {
			s.state = stArrFirst
		}
		return nil
	case ObjectEnd, ArrayEnd:
		s.pos++
		s.depth--
	case Key:
		if err := s.str(skipping); err != nil {
			return err
		}
		// The key stays in the buffer while the ':' is looked for.
		s.hold = !skipping
		c, ok := s.ws()
		s.hold = false
		if !ok {
			return s.truncated(s.pos)
		}
		if c != ':' {
			return s.fail(s.pos, fmt.Sprintf("expected ':' after an object key, found %q", c), nil)
		}
		s.pos++
		s.state = stValue
		return nil
	case String:
		err = s.str(skipping)
	case Number:
		err = s.number()
	case True:
		err = s.literal("true")
	case False:
		err = s.literal("false")
	case Null:
		err = s.literal("null")
	}
	if err != nil {
		return err
	}
	switch {
	case s.depth == 0:
		s.state = stDone
	case s.inObject():
		s.state = stObjNext
	default:
		s.state = stArrNext
	}
	return nil
}

func (s *Scanner) literal(lit string) error {
	if !s.want(len(lit)) {
		// What is there must still be a prefix of lit to be merely cut.
		if string(s.buf[s.pos:]) != lit[:len(s.buf)-s.pos] {
			return s.fail(s.pos, "invalid literal, expected "+lit, nil)
		}
		return s.truncated(len(s.buf))
	}
	if string(s.buf[s.pos:s.pos+len(lit)]) != lit {
		return s.fail(s.pos, "invalid literal, expected "+lit, nil)
	}
	s.pos += len(lit)
	return nil
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; what
// follows is the grammar's business.
func (s *Scanner) number() error {
	n := 0
	at := func(i int) byte {
		if !s.want(i + 1) {
			return 0
		}
		return s.buf[s.pos+i]
	}
	digits := func() bool {
		start := n
		for c := at(n); c >= '0' && c <= '9'; c = at(n) {
			n++
		}
		return n > start
	}
	bad := func() error {
		if s.pos+n == len(s.buf) && !s.want(n+1) {
			return s.truncated(s.pos + n)
		}
		return s.fail(s.pos+n, fmt.Sprintf("invalid character %q in a number", s.buf[s.pos+n]), nil)
	}
	if at(n) == '-' {
		n++
	}
	if at(n) == '0' {
		n++
	} else if !digits() {
		return bad()
	}
	if at(n) == '.' {
		n++
		if !digits() {
			return bad()
		}
	}
	if c := at(n); c == 'e' || c == 'E' {
		n++
		if c := at(n); c == '+' || c == '-' {
			n++
		}
		if !digits() {
			return bad()
		}
	}
	if n > s.lim.MaxToken {
		return s.fail(s.pos, fmt.Sprintf("number longer than %d bytes", s.lim.MaxToken), ErrTooLong)
	}
	s.tokStart, s.tokEnd, s.esc = s.pos, s.pos+n, false
	s.pos += n
	return nil
}

// str reads the string whose opening quote is at pos. Unless skipping it
// keeps the string's bytes in buf[tokStart:tokEnd]; when skipping only
// what is not yet scanned stays in the buffer.
func (s *Scanner) str(skipping bool) error {
	s.pos++
	esc := false
	n := 0 // bytes of the string scanned, from pos
	for {
		b := s.buf[s.pos+n:]
		k := plain(b)
		n += k
		if k == len(b) {
			if skipping {
				s.pos, n = s.pos+n, 0
			} else if n > s.lim.MaxToken {
				return s.fail(s.pos, fmt.Sprintf("string longer than %d bytes", s.lim.MaxToken), ErrTooLong)
			}
			if !s.fill() {
				return s.truncated(s.pos + n)
			}
			continue
		}
		switch c := b[k]; c {
		case '"':
			if !skipping {
				if n > s.lim.MaxToken {
					return s.fail(s.pos, fmt.Sprintf("string longer than %d bytes", s.lim.MaxToken), ErrTooLong)
				}
				s.tokStart, s.tokEnd, s.esc = s.pos, s.pos+n, esc
			}
			s.pos += n + 1
			return nil
		case '\\':
			esc = true
			if !s.want(n + 2) {
				return s.truncated(s.pos + n + 1)
			}
			switch s.buf[s.pos+n+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				n += 2
			case 'u':
				if !s.want(n + 6) {
					return s.truncated(s.pos + n)
				}
				if _, ok := hex4(s.buf[s.pos+n+2:]); !ok {
					return s.fail(s.pos+n, "invalid \\u escape", nil)
				}
				n += 6
			default:
				return s.fail(s.pos+n, fmt.Sprintf("invalid escape \\%q in a string", s.buf[s.pos+n+1]), nil)
			}
		default:
			return s.fail(s.pos+n, fmt.Sprintf("invalid character %q in a string", c), nil)
		}
	}
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain returns how many leading bytes of b may stand in a string as
// they are: not '"', not '\\', not a control character. It looks at
// eight bytes at a time.
func plain(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ (ones * '"')
		e := x ^ (ones * '\\')
		// A byte is flagged when it is zero in q or e, or below 0x20 in x;
		// the lowest flag is exact (later ones may be false positives).
		if m := ((q - ones) &^ q) | ((e - ones) &^ e) | ((x - ones*0x20) &^ x); m&highs != 0 {
			return i + bits.TrailingZeros64(m&highs)>>3
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' || c == '\\' || c < 0x20 {
			return i
		}
	}
	return i
}
