package nixdaemon

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The worker protocol's framing: every number is a little-endian uint64,
// every string a length followed by its bytes, zero-padded to a multiple
// of 8, and a list a count followed by its items.

// maxCount bounds a list's length: a corrupt or hostile stream must not
// make the reader allocate without bound.
const maxCount = 1 << 20

// ErrProtocol is wrapped by every error that comes from a malformed
// stream (as opposed to one the daemon reports).
var ErrProtocol = errors.New("nix worker protocol")

type reader struct {
	r *bufio.Reader
	// maxString caps what is kept of a string; the rest is read and
	// dropped, so the stream stays in step whatever a build prints.
	maxString int
	// err is the first error the stream gave (a read's or ErrProtocol's):
	// every read after it returns a zero value, so a message is read
	// whole and err checked once, as writer does.
	err error
	buf [8]byte
}

// fail records err, unless an earlier error is recorded.
func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	if _, err := io.ReadFull(r.r, r.buf[:]); err != nil {
		r.fail(err)
		return 0
	}
	return binary.LittleEndian.Uint64(r.buf[:])
}

// str reads a string, keeping at most maxString bytes of it.
func (r *reader) str() string {
	n := r.u64()
	if r.err != nil {
		return ""
	}
	if n > 1<<40 {
		r.fail(fmt.Errorf("%w: string of %d bytes", ErrProtocol, n))
		return ""
	}
	keep := min(n, uint64(r.maxString))
	b := make([]byte, keep)
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.fail(err)
		return ""
	}
	skip := n - keep + (8-n%8)%8
	if _, err := r.r.Discard(int(skip)); err != nil {
		r.fail(err)
		return ""
	}
	return string(b)
}

// count reads a list's length.
func (r *reader) count() int {
	n := r.u64()
	if n > maxCount {
		r.fail(fmt.Errorf("%w: list of %d items", ErrProtocol, n))
		return 0
	}
	return int(n)
}

type writer struct {
	w   *bufio.Writer
	err error
	buf [8]byte
}

func (w *writer) u64(v uint64) {
	if w.err != nil {
		return
	}
	binary.LittleEndian.PutUint64(w.buf[:], v)
	_, w.err = w.w.Write(w.buf[:])
}

func (w *writer) bool(v bool) {
	if v {
		w.u64(1)
	} else {
		w.u64(0)
	}
}

func (w *writer) str(s string) {
	w.u64(uint64(len(s)))
	if w.err != nil {
		return
	}
	if _, w.err = w.w.WriteString(s); w.err != nil {
		return
	}
	var pad [8]byte
	_, w.err = w.w.Write(pad[:(8-len(s)%8)%8])
}

func (w *writer) strs(ss []string) {
	w.u64(uint64(len(ss)))
	for _, s := range ss {
		w.str(s)
	}
}

func (w *writer) flush() error {
	if w.err != nil {
		return w.err
	}
	return w.w.Flush()
}
