package eval

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"nixbus.dev/nixbus/pkg/nix"
)

// Bounds on what is kept of the repl's output: everything it prints may
// come from the flake.
const (
	// maxValueLine bounds one value line (a set's names, a job's fields).
	maxValueLine = 16 << 20
	// maxErrLine bounds one stderr line kept for an error message.
	maxErrLine = 64 << 10
	// maxMessage bounds one attribute's error message.
	maxMessage = 64 << 10
)

// repl is one `nix repl` process evaluating one expression per line. Each
// expression is followed by a marker expression, `trace "M" "M"` with M
// holding a random nonce and a sequence number: it prints "M" on stdout
// and "trace: M" on stderr, which ends the expression's output on both
// streams. A flake cannot print the marker: it never sees the nonce.
type repl struct {
	proc  *nix.Proc
	stdin io.WriteCloser
	w     *bufio.Writer
	nonce string
	sent  uint64
	outs  chan outSeg
	errs  chan errSeg
}

// outSeg is what stdout held up to a marker: the last value line.
type outSeg struct {
	value   []byte // the string's contents, unescaped; nil: none
	tooLong bool
}

// errSeg is what stderr held up to a marker: nix's error, if any.
type errSeg struct {
	msg string
}

// errDied says the repl exited; the message is the last error it printed.
type diedError struct{ msg string }

func (e *diedError) Error() string { return e.msg }

func newNonce() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "nixbus" + hex.EncodeToString(b)
}

// startRepl starts `nix repl` (pure evaluation) with n's limits.
func startRepl(ctx context.Context, n *nix.Nix, window int) (*repl, error) {
	cmd := n.Command(ctx, []string{"repl"}, "--option", "pure-eval", "true")
	cmd.Env = append(cmd.Environ(), "NO_COLOR=1", "TERM=dumb")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	proc, err := n.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start nix repl: %w", err)
	}
	r := &repl{
		proc: proc, stdin: stdin, w: bufio.NewWriter(stdin), nonce: newNonce(),
		outs: make(chan outSeg, window+1), errs: make(chan errSeg, window+2),
	}
	go r.readStdout(stdout)
	go r.readStderr(stderr)
	return r, nil
}

func (r *repl) marker(seq uint64) string { return fmt.Sprintf("%s-%d", r.nonce, seq) }

// send queues expr (one line, complete) and its marker; flush writes them.
func (r *repl) send(expr string) {
	r.sent++
	m := r.marker(r.sent)
	r.w.WriteString(expr)
	r.w.WriteString("\n__nbB" + r.nonce + `.trace "` + m + `" "` + m + "\"\n")
}

func (r *repl) flush() error { return r.w.Flush() }

// recv waits for the output of the oldest expression not yet received.
func (r *repl) recv(ctx context.Context) (outSeg, errSeg, error) {
	var o outSeg
	var e errSeg
	var ok bool
	select {
	case o, ok = <-r.outs:
	case <-ctx.Done():
		return o, e, ctx.Err()
	}
	if !ok {
		// stdout ended: the repl is gone; its last words are on stderr.
		for e = range r.errs {
		}
		return o, e, &diedError{msg: e.msg}
	}
	select {
	case e, ok = <-r.errs:
	case <-ctx.Done():
		return o, e, ctx.Err()
	}
	if !ok {
		return o, e, &diedError{msg: "nix repl closed its stderr"}
	}
	return o, e, nil
}

// close ends the repl: stdin closed, the process group killed, reaped.
func (r *repl) close() error {
	_ = r.stdin.Close()
	err := r.proc.Wait()
	// The readers end with the pipes, which Wait closed.
	for range r.outs {
	}
	for range r.errs {
	}
	return err
}

// readLines calls fn with each line of rd, without its newline, cut to
// max bytes (cut reports that it was longer); a line is never held whole.
func readLines(rd io.Reader, max int, fn func(line []byte, cut bool)) {
	br := bufio.NewReaderSize(rd, 64<<10)
	var buf []byte
	n := 0
	for {
		chunk, err := br.ReadSlice('\n')
		n += len(chunk)
		if room := max - len(buf); room > 0 {
			buf = append(buf, chunk[:min(room, len(chunk))]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if bytes.HasSuffix(chunk, []byte("\n")) {
			n--
		}
		line := bytes.TrimSuffix(buf, []byte("\n"))
		if n > 0 || err == nil {
			fn(line, n > max)
		}
		buf, n = buf[:0], 0
		if err != nil {
			return
		}
	}
}

var (
	promptPrefix = []byte("nix-repl> ")
	colorStart   = []byte("\x1b[35;1m")
	colorEnd     = []byte("\x1b[0m")
)

// readStdout turns stdout into one outSeg per marker.
func (r *repl) readStdout(rd io.Reader) {
	defer close(r.outs)
	seq := uint64(1)
	want := []byte(`"` + r.marker(seq) + `"`)
	var cur outSeg
	readLines(rd, maxValueLine, func(line []byte, cut bool) {
		for bytes.HasPrefix(line, promptPrefix) {
			line = line[len(promptPrefix):]
		}
		line = bytes.TrimPrefix(line, colorStart)
		if !cut {
			line = bytes.TrimSuffix(line, colorEnd)
		}
		switch {
		case bytes.Equal(line, want):
			r.outs <- cur
			cur = outSeg{}
			seq++
			want = []byte(`"` + r.marker(seq) + `"`)
		case cut && len(line) > 0 && line[0] == '"':
			cur = outSeg{tooLong: true}
		case len(line) >= 2 && line[0] == '"' && line[len(line)-1] == '"':
			cur = outSeg{value: unquote(line[1 : len(line)-1])}
		}
	})
}

// readStderr turns stderr into one errSeg per marker: the text from the
// last line starting with "error:" (traces and warnings before it are
// dropped), at most maxMessage bytes of it.
func (r *repl) readStderr(rd io.Reader) {
	defer close(r.errs)
	seq := uint64(1)
	want := []byte("trace: " + r.marker(seq))
	var msg strings.Builder
	capturing := false
	readLines(rd, maxErrLine, func(line []byte, cut bool) {
		// No copy of a line that is neither the marker nor kept.
		if bytes.IndexByte(line, 0x1b) >= 0 {
			line = []byte(nix.StripANSI(string(line)))
		}
		switch {
		case bytes.Equal(line, want):
			r.errs <- errSeg{msg: msg.String()}
			msg.Reset()
			capturing = false
			seq++
			want = []byte("trace: " + r.marker(seq))
			return
		case bytes.HasPrefix(line, []byte("error:")):
			msg.Reset()
			capturing = true
		case !capturing:
			return
		}
		if room := maxMessage - msg.Len(); room > 0 {
			msg.Write(line[:min(room, len(line))])
			if cut {
				msg.WriteString(" [...]")
			}
			msg.WriteByte('\n')
		}
	})
	if capturing {
		r.errs <- errSeg{msg: msg.String()}
	}
}

// unquote undoes nix's printing of a string value: a backslash escapes
// the next byte, \n \r \t stand for themselves; other bytes are raw.
func unquote(s []byte) []byte {
	if bytes.IndexByte(s, '\\') < 0 {
		return append([]byte(nil), s...)
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			out = append(out, c)
			continue
		}
		i++
		switch s[i] {
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		default:
			out = append(out, s[i])
		}
	}
	return out
}
