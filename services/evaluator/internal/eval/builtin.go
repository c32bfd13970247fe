package eval

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"nixbus.dev/nixbus/pkg/evaljobs"
	"nixbus.dev/nixbus/pkg/nix"
)

//go:embed walk.nix
var walkLib string

// Builtin evaluates hydraJobs with plain nix, for hosts without
// nix-eval-jobs: one `nix repl` loads the flake once (its inputs are
// fetched and copied once) and evaluates one attribute per expression,
// keeping what it evaluated for the next. A job comes out as soon as it is
// evaluated; an attribute that fails gets nix's own error message, printed
// by the same repl, so nothing is evaluated twice.
type Builtin struct {
	Nix *nix.Nix
	// Workers is unused: one repl evaluates, as one `nix eval` would.
	Workers int
	// GCRootsDir, when set, gets a symlink to every job's derivation, so
	// a garbage collection between evaluation and build does not delete
	// it (a directory under /nix/var/nix/gcroots/ makes them roots).
	GCRootsDir string
	// ScratchDir, when set, is where a flake whose flake.lock is missing
	// or out of date is copied and locked (the repl only loads locked
	// flakes); empty: a temporary directory.
	ScratchDir string
	// Emit, when set, gets each record as soon as it is evaluated, and
	// Result.Records stays empty: memory does not grow with the job count.
	Emit   func(Record)
	Logger *slog.Logger
}

// window is how many expressions are sent to the repl ahead of reading
// their results.
const window = 32

// step is one attribute to evaluate: its path, and for each element the
// index of its name (used instead of a name unsafe to quote).
type step struct {
	path []string
	idx  []int
}

// expr is the Nix list naming s's attribute.
func (s step) expr() string {
	var b strings.Builder
	b.WriteString("[")
	for i, p := range s.path {
		b.WriteString(" ")
		if quotable(p) {
			b.WriteString(nix.StringLiteral(p))
		} else {
			b.WriteString(strconv.Itoa(s.idx[i]))
		}
	}
	b.WriteString(" ]")
	return b.String()
}

// quotable reports whether name is short printable ASCII, safe to write as
// a Nix string literal on one line of the repl's input.
func quotable(name string) bool {
	if len(name) > 256 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] > 0x7e {
			return false
		}
	}
	return true
}

// Eval evaluates installable (<flake>#hydraJobs). On ctx's end it returns
// the records evaluated so far with ctx's error; a failure of the whole
// evaluation (the flake does not load, hydraJobs does not evaluate, nix
// dies) is a *Failure, with the records evaluated before it.
func (b *Builtin) Eval(ctx context.Context, installable string) (Result, error) {
	res := Result{Evaluator: "builtin"}
	if b.GCRootsDir != "" {
		if err := os.MkdirAll(b.GCRootsDir, 0o755); err != nil {
			return res, fmt.Errorf("create gc roots dir: %w", err)
		}
	}
	ref, attr, ok := strings.Cut(installable, "#")
	if !ok || attr == "" || !quotable(ref) || strings.ContainsAny(ref, " ") {
		return res, &Failure{Msg: fmt.Sprintf("cannot evaluate %q: a flake reference of printable characters without spaces and an attribute are needed", installable)}
	}
	emit := b.Emit
	if emit == nil {
		emit = func(r Record) { res.Records = append(res.Records, r) }
	}
	err := b.eval(ctx, ref, attr, emit)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, err
}

func (b *Builtin) eval(ctx context.Context, ref, attr string, emit func(Record)) error {
	r, err := startRepl(ctx, b.Nix, window)
	if err != nil {
		return &Failure{Msg: err.Error()}
	}
	defer func() {
		if err := r.close(); err != nil && ctx.Err() == nil {
			b.Logger.Debug("nix repl exit", "err", err)
		}
	}()
	msg, err := b.load(ctx, r, ref, attr)
	if err != nil {
		return err
	}
	if msg != "" && strings.Contains(msg, "requires lock file changes") {
		// The repl cannot lock a flake in memory as `nix eval` does: lock
		// a copy, and load that instead.
		locked, cleanup, lerr := b.lock(ctx, ref)
		if lerr != nil {
			return lerr
		}
		defer cleanup()
		if msg, err = b.load(ctx, r, locked, attr); err != nil {
			return err
		}
	}
	if msg != "" {
		return &Failure{Msg: "evaluate " + attr + ": " + msg}
	}
	return b.walk(ctx, r, attr, emit)
}

// load defines the walk and the marker's builtins, loads the flake, and
// defines its attribute as the walk's root. msg is nix's error, if any.
func (b *Builtin) load(ctx context.Context, r *repl, ref, attr string) (msg string, err error) {
	n := r.nonce
	r.send("__nbB" + n + " = builtins")
	r.send("__nbW" + n + " = " + strings.Join(nixLines(walkLib), " "))
	r.send(":lf " + ref)
	r.send("__nbR" + n + " = outputs." + attrPathExpr(strings.Split(attr, ".")))
	r.send("__nbB" + n + ".seq __nbR" + n + " null")
	if err := r.flush(); err != nil {
		return "", b.died(ctx, r, err)
	}
	for range 5 {
		_, e, err := r.recv(ctx)
		if err != nil {
			return "", b.died(ctx, r, err)
		}
		if e.msg != "" && msg == "" {
			msg = evaljobs.CleanError(e.msg)
		}
	}
	return msg, nil
}

// chunkSize is how many children of a set one expression evaluates, for
// sets of more than chunkSize children: each repl expression costs about
// 0.2 ms of CPU and a round of reads and writes, which one expression per
// job would pay thousands of times. The price: on a timeout, the jobs
// already evaluated in the chunk under way are not reported.
const chunkSize = 32

// item is one expression of the walk: the attribute at s (node), or the
// children from..to of the set at s (chunk).
type item struct {
	s        step
	chunk    bool
	from, to int
	names    []string
}

// child is the step to the set's i-th child.
func (it item) child(i int) step {
	return step{
		path: append(append(make([]string, 0, len(it.s.path)+1), it.s.path...), it.names[i]),
		idx:  append(append(make([]int, 0, len(it.s.idx)+1), it.s.idx...), i),
	}
}

// walk evaluates every attribute below the root, depth first, window
// expressions ahead.
func (b *Builtin) walk(ctx context.Context, r *repl, attr string, emit func(Record)) error {
	todo := []item{{}}
	var inflight []item
	n := r.nonce
	for len(todo) > 0 || len(inflight) > 0 {
		for len(todo) > 0 && len(inflight) < window {
			it := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			if it.chunk {
				r.send(fmt.Sprintf("__nbW%s.chunk __nbR%s %s %d %d", n, n, it.s.expr(), it.from, it.to))
			} else {
				r.send("__nbW" + n + ".node __nbR" + n + " " + it.s.expr())
			}
			inflight = append(inflight, it)
		}
		if err := r.flush(); err != nil {
			return b.died(ctx, r, err)
		}
		o, e, err := r.recv(ctx)
		if err != nil {
			return b.died(ctx, r, err)
		}
		it := inflight[0]
		inflight = inflight[1:]
		var later []item
		if it.chunk {
			later = b.chunk(it, o, emit)
		} else {
			sub, err := b.node(it.s, o, e, attr, emit)
			if err != nil {
				return err
			}
			later = sub
		}
		// Pushed in reverse, so they are evaluated in order.
		for i := len(later) - 1; i >= 0; i-- {
			todo = append(todo, later[i])
		}
	}
	return nil
}

// node handles one attribute's result, and returns what to evaluate next
// below it (a set's children).
func (b *Builtin) node(s step, o outSeg, e errSeg, attr string, emit func(Record)) ([]item, error) {
	names, rec := b.record(s, o, e)
	if len(s.path) == 0 && rec != nil {
		if rec.Error != "" {
			return nil, &Failure{Msg: "evaluate " + attr + ": " + rec.Error}
		}
		if rec.DrvPath == "" {
			return nil, &Failure{Msg: "evaluate " + attr + ": not an attribute set of jobs"}
		}
	}
	if rec != nil {
		b.emit(*rec, emit)
	}
	return children(s, names), nil
}

// children are the items that walk the set at s with names.
func children(s step, names []string) []item {
	set := item{s: s, names: names}
	var out []item
	if len(names) <= chunkSize {
		for i := range names {
			out = append(out, item{s: set.child(i)})
		}
		return out
	}
	for from := 0; from < len(names); from += chunkSize {
		out = append(out, item{s: s, chunk: true, from: from, to: min(from+chunkSize, len(names)), names: names})
	}
	return out
}

// chunk handles a chunk's result: its jobs are emitted; a child that failed
// (or all of them, if the chunk failed as a whole: an error tryEval cannot
// catch) is evaluated again alone, which gives its message (what it needs
// is already evaluated).
func (b *Builtin) chunk(it item, o outSeg, emit func(Record)) []item {
	var vals []string
	if len(o.value) > 0 && o.value[0] == 'c' {
		vals, _ = evaljobs.Strings(o.value[1:])
	}
	var later []item
	if len(vals) != it.to-it.from {
		for i := it.from; i < it.to; i++ {
			later = append(later, item{s: it.child(i)})
		}
		return later
	}
	for k, v := range vals {
		s := it.child(it.from + k)
		if v == "f" {
			later = append(later, item{s: s})
			continue
		}
		names, rec := b.record(s, outSeg{value: []byte(v)}, errSeg{})
		if rec != nil {
			b.emit(*rec, emit)
		}
		later = append(later, children(s, names)...)
	}
	return later
}

func (b *Builtin) emit(rec Record, emit func(Record)) {
	if rec.Error == "" {
		b.addRoot(rec.DrvPath)
	}
	emit(rec)
}

// record reads one attribute's result: the names of a set to walk, or the
// attribute's record (nil for null).
func (b *Builtin) record(s step, o outSeg, e errSeg) ([]string, *Record) {
	rec := &Record{Attr: evaljobs.AttrName(s.path), AttrPath: s.path}
	v := o.value
	switch {
	case o.tooLong:
		rec.Error = fmt.Sprintf("attribute too large to evaluate: its value is over %d bytes", maxValueLine)
	case v == nil && e.msg != "":
		rec.Error = evaljobs.CleanError(e.msg)
	case len(v) == 0:
		rec.Error = "evaluation failed"
	case v[0] == 'n':
		return nil, nil
	case v[0] == 'u':
		rec.Error = fmt.Sprintf("unsupported value of type %s: not a derivation or an attribute set", string(v[1:]))
	case v[0] == 's':
		names, err := evaljobs.Strings(v[1:])
		if err != nil {
			rec.Error = fmt.Sprintf("read attribute names: %v", err)
			break
		}
		return names, nil
	case v[0] == 'd':
		var d struct {
			DrvPath string            `json:"drvPath"`
			Name    string            `json:"name"`
			System  string            `json:"system"`
			Outputs map[string]string `json:"outputs"`
		}
		if err := json.Unmarshal(v[1:], &d); err != nil {
			rec.Error = fmt.Sprintf("read derivation: %v", err)
			break
		}
		rec.DrvPath, rec.Name, rec.System, rec.Outputs = d.DrvPath, d.Name, d.System, d.Outputs
	default:
		rec.Error = "evaluation failed"
	}
	return nil, rec
}

// died turns the repl's end into the evaluation's error.
func (b *Builtin) died(ctx context.Context, r *repl, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var d *diedError
	msg := err.Error()
	if errors.As(err, &d) {
		msg = evaljobs.CleanError(d.msg)
		if d.msg == "" {
			msg = "nix repl exited"
		}
	}
	if nix.OutOfMemory(msg) && b.Nix != nil && b.Nix.MaxMemoryMB > 0 {
		msg = (&nix.Error{MemoryLimitMB: b.Nix.MaxMemoryMB}).MemoryMessage()
	}
	return &Failure{Msg: "nix repl: " + msg}
}

// lock copies the flake at ref (a path: reference) into a scratch
// directory and locks it there, leaving the original untouched.
func (b *Builtin) lock(ctx context.Context, ref string) (string, func(), error) {
	dir, ok := strings.CutPrefix(ref, "path:")
	if !ok {
		return "", nil, &Failure{Msg: "flake " + ref + " needs a lock file"}
	}
	if q := strings.IndexByte(dir, '?'); q >= 0 {
		dir = dir[:q]
	}
	scratch, err := os.MkdirTemp(b.ScratchDir, "locked-")
	if err != nil {
		return "", nil, fmt.Errorf("create scratch dir: %w", err)
	}
	cleanup := func() { _ = os.RemoveAll(scratch) }
	dst := filepath.Join(scratch, "flake")
	if err := os.CopyFS(dst, os.DirFS(dir)); err != nil {
		cleanup()
		return "", nil, &Failure{Msg: fmt.Sprintf("copy the flake to lock it: %v", err)}
	}
	if _, err := b.Nix.Output(ctx, []string{"flake", "lock"}, "path:"+dst); err != nil {
		cleanup()
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
		return "", nil, &Failure{Msg: "lock the flake: " + nixMessage(err)}
	}
	return "path:" + dst, cleanup, nil
}

// nixLines joins a Nix file into one line: comments dropped (walk.nix has
// no # or newline inside strings).
func nixLines(src string) []string {
	var out []string
	for _, l := range strings.Split(src, "\n") {
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// attrPathExpr is path as a Nix attribute path of string literals.
func attrPathExpr(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = nix.StringLiteral(p)
	}
	return strings.Join(parts, ".")
}

// nixMessage is the error nix reported, or err itself if nix said nothing.
func nixMessage(err error) string {
	var ne *nix.Error
	if errors.As(err, &ne) && ne.MemoryLimitMB > 0 {
		return ne.MemoryMessage()
	}
	if errors.As(err, &ne) && strings.TrimSpace(ne.Stderr) != "" {
		return evaljobs.CleanError(ne.Stderr)
	}
	return err.Error()
}

// addRoot links GCRootsDir/<drv name> to drvPath. Names come from nix, but
// only a plain store path is linked, never anything that could leave the
// directory.
func (b *Builtin) addRoot(drvPath string) {
	if b.GCRootsDir == "" {
		return
	}
	base := filepath.Base(drvPath)
	if filepath.Dir(drvPath) != "/nix/store" || !strings.HasSuffix(base, ".drv") || strings.HasPrefix(base, ".") {
		return
	}
	if err := os.Symlink(drvPath, filepath.Join(b.GCRootsDir, base)); err != nil && !errors.Is(err, os.ErrExist) {
		b.Logger.Warn("add gc root", "drv", drvPath, "err", err)
	}
}
