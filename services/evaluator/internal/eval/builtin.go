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
	"strings"
	"sync"

	"nixbus.dev/nixbus/pkg/evaljobs"
	"nixbus.dev/nixbus/pkg/nix"
)

//go:embed walk.nix
var walkLib string

// Builtin evaluates hydraJobs with plain nix, for hosts without
// nix-eval-jobs: one `nix eval --json --apply` walks the whole tree; a
// separate evaluation of each job that failed gives its real message; and
// if the walk dies on an error tryEval cannot catch, the tree is walked
// level by level so one broken job never hides the others.
type Builtin struct {
	Nix *nix.Nix
	// Workers bounds the nix processes run at once.
	Workers int
	// GCRootsDir, when set, gets a symlink to every job's derivation, so
	// a garbage collection between evaluation and build does not delete
	// it (a directory under /nix/var/nix/gcroots/ makes them roots).
	GCRootsDir string
	Logger     *slog.Logger
}

// walkRecord is one element of walk.nix's result.
type walkRecord struct {
	AttrPath    []string          `json:"attrPath"`
	DrvPath     string            `json:"drvPath"`
	Name        string            `json:"name"`
	System      string            `json:"system"`
	Outputs     map[string]string `json:"outputs"`
	Failed      bool              `json:"failed"`
	Unsupported string            `json:"unsupported"`
	// msg is the error nix gave, when known.
	msg string
}

// Eval evaluates installable (<flake>#hydraJobs).
func (b *Builtin) Eval(ctx context.Context, installable string) (Result, error) {
	if b.GCRootsDir != "" {
		if err := os.MkdirAll(b.GCRootsDir, 0o755); err != nil {
			return Result{Evaluator: "builtin"}, fmt.Errorf("create gc roots dir: %w", err)
		}
	}
	slots := make(chan struct{}, max(b.Workers, 1))
	w := &walker{b: b, installable: installable, slots: slots}
	recs, err := w.walk(ctx, nil)
	if err != nil {
		if ctx.Err() != nil {
			return Result{Evaluator: "builtin"}, ctx.Err()
		}
		b.Logger.Info("walk stopped on an uncatchable error, walking parts", "err", err)
		names, cerr := w.children(ctx, nil)
		if ctx.Err() != nil {
			return Result{Evaluator: "builtin"}, ctx.Err()
		}
		if cerr != nil {
			return Result{Evaluator: "builtin"}, &Failure{Msg: "evaluate hydraJobs: " + nixMessage(cerr)}
		}
		if names == nil {
			return Result{Evaluator: "builtin"}, &Failure{Msg: "evaluate hydraJobs: " + nixMessage(err)}
		}
		recs = w.split(ctx, nil, names, 0, len(names), true)
		if ctx.Err() != nil {
			return Result{Evaluator: "builtin"}, ctx.Err()
		}
	}
	w.explain(ctx, recs)
	if ctx.Err() != nil {
		return Result{Evaluator: "builtin"}, ctx.Err()
	}
	res := Result{Evaluator: "builtin", Records: make([]Record, 0, len(recs))}
	for _, r := range recs {
		rec := Record{Attr: evaljobs.AttrName(r.AttrPath), AttrPath: r.AttrPath}
		switch {
		case r.msg != "":
			rec.Error = r.msg
		case r.Unsupported != "":
			rec.Error = fmt.Sprintf("unsupported value of type %s: not a derivation or an attribute set", r.Unsupported)
		case r.Failed:
			rec.Error = "evaluation failed"
		default:
			rec.DrvPath, rec.Name, rec.System, rec.Outputs = r.DrvPath, r.Name, r.System, r.Outputs
			b.addRoot(rec.DrvPath)
		}
		if len(r.AttrPath) == 0 && rec.Error != "" {
			// hydraJobs itself is broken: no job to pin it on.
			return Result{Evaluator: "builtin"}, &Failure{Msg: "evaluate hydraJobs: " + rec.Error}
		}
		res.Records = append(res.Records, rec)
	}
	return res, nil
}

type walker struct {
	b           *Builtin
	installable string
	slots       chan struct{}
}

// eval runs `nix eval --json` of walk.nix's fn at path into out.
func (w *walker) eval(ctx context.Context, fn string, path []string, out any) error {
	return w.evalExpr(ctx, fn, AttrPathExpr(path), out)
}

// evalExpr runs `nix eval --json` of walk.nix's fn applied to args (a Nix
// expression of constants) into out, holding a worker slot.
func (w *walker) evalExpr(ctx context.Context, fn, args string, out any) error {
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-w.slots }()
	expr := "(" + walkLib + ")." + fn + " " + args
	stdout, err := w.b.Nix.Output(ctx, []string{"eval"},
		"--json", "--no-eval-cache", "--no-write-lock-file", w.installable, "--apply", expr)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		return fmt.Errorf("decode nix eval output: %w", err)
	}
	return nil
}

func (w *walker) walk(ctx context.Context, path []string) ([]walkRecord, error) {
	var recs []walkRecord
	err := w.eval(ctx, "walk", path, &recs)
	return recs, err
}

func (w *walker) children(ctx context.Context, path []string) ([]string, error) {
	var names []string
	err := w.eval(ctx, "children", path, &names)
	return names, err
}

// split walks the children of path in index range [from, to) in one nix
// evaluation, unless tried says that already failed; when it fails on an
// error tryEval cannot catch, it halves the range, down to single
// children, which are split into their own children or, with none, are the
// failed jobs. A broken job among n costs about log2(n) evaluations, and
// no name goes on a command line.
func (w *walker) split(ctx context.Context, path, names []string, from, to int, tried bool) []walkRecord {
	var walkErr error
	if !tried {
		var recs []walkRecord
		expr := fmt.Sprintf("%s %d %d", AttrPathExpr(path), from, to)
		walkErr = w.evalExpr(ctx, "walkRange", expr, &recs)
		if walkErr == nil || ctx.Err() != nil {
			return recs
		}
	}
	if to-from > 1 {
		mid := from + (to-from)/2
		var left, right []walkRecord
		var wg sync.WaitGroup
		wg.Go(func() { left = w.split(ctx, path, names, from, mid, false) })
		right = w.split(ctx, path, names, mid, to, false)
		wg.Wait()
		return append(left, right...)
	}
	child := append(append([]string{}, path...), names[from])
	if walkErr == nil {
		// A range of one that was never walked alone.
		recs, err := w.walk(ctx, child)
		if err == nil || ctx.Err() != nil {
			return recs
		}
		walkErr = err
	}
	grand, err := w.children(ctx, child)
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return []walkRecord{{AttrPath: child, Failed: true, msg: nixMessage(err)}}
	case grand == nil:
		return []walkRecord{{AttrPath: child, Failed: true, msg: nixMessage(walkErr)}}
	default:
		return w.split(ctx, child, grand, 0, len(grand), false)
	}
}

// explain asks nix, one job at a time, why each job that tryEval caught
// failed, so the job carries nix's own message.
func (w *walker) explain(ctx context.Context, recs []walkRecord) {
	var wg sync.WaitGroup
	for i := range recs {
		r := &recs[i]
		if !r.Failed || r.msg != "" {
			continue
		}
		wg.Go(func() {
			var ok bool
			err := w.eval(ctx, "probe", r.AttrPath, &ok)
			switch {
			case ctx.Err() != nil:
			case err != nil:
				r.msg = nixMessage(err)
			default:
				w.b.Logger.Warn("failed job evaluates on its own", "attr", evaljobs.AttrName(r.AttrPath))
			}
		})
	}
	wg.Wait()
}

// nixMessage is the error nix reported, or err itself if nix said nothing.
func nixMessage(err error) string {
	var ne *nix.Error
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
