package drv

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"nixbus.dev/nixbus/pkg/jsontok"
)

// ParseShowDerivation reads the JSON `nix show-derivation -r` (nix < 2.15) or
// `nix derivation show -r` prints: an object keyed by derivation path whose
// values hold "inputDrvs". Newer nix keys derivations (and inputDrvs) by
// basename; those are normalised to full /nix/store paths. Only inputDrvs
// is kept: the rest (env, args, outputs) is skipped without being decoded,
// and the input is read as a stream, so memory stays proportional to the
// graph, not to the JSON.
func ParseShowDerivation(r io.Reader) (MapGraph, error) {
	hint := sizeHint(r)
	g := make(MapGraph, hint)
	intern := make(map[string]string, 2*hint)
	var inputs []string
	path := func(p []byte) string {
		if s, ok := intern[string(p)]; ok {
			return s
		}
		s := normalise(string(p))
		intern[string(p)] = s
		return s
	}
	var cur string
	err := walkShowDerivation(r, showVisitor{
		derivation: func(p []byte) { cur, inputs = path(p), inputs[:0] },
		inputDrvs:  func() { inputs = inputs[:0] },
		input:      func(p []byte) { inputs = append(inputs, path(p)) },
		done: func() {
			// One exact allocation per derivation.
			var ins []string
			if len(inputs) > 0 {
				ins = append([]string(nil), inputs...)
			}
			g[cur] = ins
		},
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// ParseShowDerivationIndexed reads the same JSON as ParseShowDerivation
// into an IndexedGraph, which Reduce walks without string lookups.
func ParseShowDerivationIndexed(r io.Reader) (*IndexedGraph, error) {
	hint := sizeHint(r)
	ig := newIndexedGraph(hint)
	// A derivation's path and its inputs' are numbered at once, when it
	// is done (IndexedGraph.idBatch).
	var (
		buf  []byte
		ends []int
		ids  []int32
	)
	add := func(p []byte) {
		if len(p) == 0 || p[0] != '/' {
			buf = append(append(buf, DefaultStoreDir...), '/')
		}
		buf = append(buf, p...)
		ends = append(ends, len(buf))
	}
	err := walkShowDerivation(r, showVisitor{
		derivation: func(p []byte) { buf, ends = buf[:0], ends[:0]; add(p) },
		inputDrvs:  func() { buf, ends = buf[:ends[0]], ends[:1] },
		input:      add,
		done: func() {
			ids = ig.idBatch(buf, ends, ids[:0])
			ig.setInputs(ids[0], ids[1:])
		},
	})
	if err != nil {
		return nil, err
	}
	return ig, nil
}

// sizeHint guesses the derivation count from a file's size (a few hundred
// bytes to a few KiB each), which saves growing maps.
func sizeHint(r io.Reader) int {
	hint := 1 << 12
	if f, ok := r.(interface{ Stat() (os.FileInfo, error) }); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			hint = int(min(max(fi.Size()/1024, int64(hint)), 1<<22))
		}
	}
	return hint
}

// showVisitor is told of each derivation (its path as written), of each
// of its input derivations, then that the derivation is done. The paths
// are valid only during the call.
type showVisitor struct {
	derivation, input func(path []byte)
	// inputDrvs starts the derivation's inputs over: a repeated key
	// counts as its last occurrence, as in encoding/json.
	inputDrvs func()
	done      func()
}

var inputDrvsKey = []byte("inputDrvs")

// walkShowDerivation reads show-derivation JSON, telling v of derivations
// and their inputDrvs keys; every other field is skipped undecoded.
func walkShowDerivation(r io.Reader, v showVisitor) error {
	sc := jsontok.NewReader(r, jsontok.Limits{MaxToken: 1 << 20})
	if err := walkDerivations(sc, v); err != nil {
		return fmt.Errorf("parse derivations JSON: %w", err)
	}
	return nil
}

func walkDerivations(sc *jsontok.Scanner, v showVisitor) error {
	err := sc.Members(func(path []byte) error {
		v.derivation(path)
		if err := sc.Members(func(key []byte) error {
			if !bytes.Equal(key, inputDrvsKey) {
				return sc.Skip()
			}
			// {"<drv>": ["out"], ...} (or, on newer nix, {"<drv>":
			// {"outputs": [...], "dynamicOutputs": {...}}}): the keys.
			v.inputDrvs()
			return sc.Members(func(input []byte) error {
				v.input(input)
				return sc.Skip()
			})
		}); err != nil {
			return err
		}
		v.done()
		return nil
	})
	if err != nil {
		return err
	}
	return sc.Expect(jsontok.End)
}
