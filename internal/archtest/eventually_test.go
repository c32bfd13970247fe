package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNoFailNowInEventually: a require.Eventually condition runs off the
// test goroutine, so a require/t.Fatal inside it cannot stop the test: the
// test waits out the whole timeout and says only "Condition never
// satisfied". Such conditions return false (or use EventuallyWithT, whose
// conditions may fail only their *assert.CollectT). That holds for the
// helpers a condition calls too, here and in the module's other packages
// (natstest.Read, a method that calls require on a stored *testing.T).
func TestNoFailNowInEventually(t *testing.T) {
	code := parseModule(t)
	var bad []string
	for _, f := range code.files {
		ast.Inspect(f.ast, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			cond, wrapped := code.wrapper(f, call) // a helper handing its argument to Eventually
			if !wrapped {
				cond = 1
			}
			if cond >= len(call.Args) {
				return true
			}
			lit, ok := call.Args[cond].(*ast.FuncLit)
			if !ok {
				return true
			}
			collect := "" // EventuallyWithT's *assert.CollectT, which may fail
			switch {
			case wrapped || isSel(call.Fun, "Eventually"):
			case isSel(call.Fun, "EventuallyWithT") && len(lit.Type.Params.List) == 1 && len(lit.Type.Params.List[0].Names) == 1:
				collect = lit.Type.Params.List[0].Names[0].Name
			default:
				return true
			}
			ast.Inspect(lit.Body, func(n ast.Node) bool {
				c, ok := n.(*ast.CallExpr)
				if !ok || (collect != "" && passes(c, collect)) {
					return true
				}
				if failsNow(c) {
					bad = append(bad, code.fset.Position(c.Pos()).String())
				} else if callee := code.failing(f, c); callee != "" {
					bad = append(bad, code.fset.Position(c.Pos()).String()+" (calls "+callee+", which may fail the test)")
				}
				return true
			})
			return true
		})
	}
	require.Empty(t, bad, "require/t.Fatal inside an Eventually condition")
}

func isSel(e ast.Expr, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == name
}

// failsNow reports whether c stops a test: a require assertion, or
// Fatal/FailNow/Skip on a test handle.
func failsNow(c *ast.CallExpr) bool {
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	if x, ok := sel.X.(*ast.Ident); ok && x.Name == "require" {
		return true
	}
	switch sel.Sel.Name {
	case "Fatal", "Fatalf", "FailNow":
		return true
	case "Skip", "Skipf", "SkipNow": // on a test handle: t, tb, b, x.t (not a tokenizer's Skip)
		switch x := sel.X.(type) {
		case *ast.Ident:
			return x.Name == "t" || x.Name == "tb" || x.Name == "b"
		case *ast.SelectorExpr:
			return x.Sel.Name == "t"
		}
	}
	return false
}

// passes reports whether c gets the identifier name as an argument.
func passes(c *ast.CallExpr, name string) bool {
	for _, a := range c.Args {
		if id, ok := a.(*ast.Ident); ok && id.Name == name {
			return true
		}
	}
	return false
}

type goFile struct {
	dir     string            // package directory, relative to the repo
	ast     *ast.File         //
	imports map[string]string // local name -> directory of the module's imports
	test    bool              // a _test.go file: only test code sees its functions
}

type decl struct {
	fn   *ast.FuncDecl
	file *goFile
}

// codebase is every Go file of the repository with its functions and
// methods by package directory and name, and which of them may stop the
// test that calls them (directly or through another).
type codebase struct {
	fset    *token.FileSet
	files   []*goFile
	funcs   map[string]map[string][]decl // dir -> name -> functions
	methods map[string]map[string][]decl // dir -> name -> methods of any type
	fails   map[*ast.FuncDecl]bool
	// wraps: functions that pass their parameter at the index as the
	// condition of a require.Eventually (eventually(t, what, cond)).
	wraps map[*ast.FuncDecl]int
}

func parseModule(t *testing.T) *codebase {
	t.Helper()
	m := &codebase{fset: token.NewFileSet(), funcs: map[string]map[string][]decl{},
		methods: map[string]map[string][]decl{}, fails: map[*ast.FuncDecl]bool{}, wraps: map[*ast.FuncDecl]int{}}
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(m.fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		gf := &goFile{dir: filepath.ToSlash(rel), ast: f, imports: map[string]string{}, test: strings.HasSuffix(p, "_test.go")}
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			dir, ok := strings.CutPrefix(ip, module)
			if !ok {
				continue
			}
			name := path.Base(ip)
			if imp.Name != nil {
				name = imp.Name.Name
			}
			gf.imports[name] = dir
		}
		m.files = append(m.files, gf)
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			by := m.funcs
			if fn.Recv != nil {
				by = m.methods
			}
			if by[gf.dir] == nil {
				by[gf.dir] = map[string][]decl{}
			}
			by[gf.dir][fn.Name.Name] = append(by[gf.dir][fn.Name.Name], decl{fn, gf})
			if i, ok := wrapsEventually(fn); ok {
				m.wraps[fn] = i
			}
		}
		return nil
	})
	require.NoError(t, err)
	// Which functions may fail: those that do, then those that call one,
	// until nothing changes.
	for changed := true; changed; {
		changed = false
		for _, by := range []map[string]map[string][]decl{m.funcs, m.methods} {
			for _, names := range by {
				for _, ds := range names {
					for _, d := range ds {
						if !m.fails[d.fn] && m.mayFail(d) {
							m.fails[d.fn], changed = true, true
						}
					}
				}
			}
		}
	}
	return m
}

func (m *codebase) mayFail(d decl) bool {
	found := false
	ast.Inspect(d.fn.Body, func(n ast.Node) bool {
		c, ok := n.(*ast.CallExpr)
		if ok && (failsNow(c) || m.failing(d.file, c) != "") {
			found = true
		}
		return !found
	})
	return found
}

// wrapsEventually reports which parameter of fn, if any, it passes to
// Eventually as the condition.
func wrapsEventually(fn *ast.FuncDecl) (int, bool) {
	params := map[string]int{}
	i := 0
	for _, field := range fn.Type.Params.List {
		for _, name := range field.Names {
			params[name.Name] = i
			i++
		}
		if len(field.Names) == 0 {
			i++
		}
	}
	index, found := 0, false
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || !isSel(call.Fun, "Eventually") || len(call.Args) < 2 {
			return true
		}
		if id, ok := call.Args[1].(*ast.Ident); ok {
			if j, ok := params[id.Name]; ok {
				index, found = j, true
			}
		}
		return true
	})
	return index, found
}

// wrapper reports whether c (in f) calls a function that hands one of its
// arguments to Eventually as the condition, and which.
func (m *codebase) wrapper(f *goFile, c *ast.CallExpr) (int, bool) {
	var cands []decl
	switch fun := c.Fun.(type) {
	case *ast.Ident:
		cands = m.funcs[f.dir][fun.Name]
	case *ast.SelectorExpr:
		if x, ok := fun.X.(*ast.Ident); ok {
			cands = m.funcs[f.imports[x.Name]][fun.Sel.Name]
		}
	}
	for _, d := range cands {
		if i, ok := m.wraps[d.fn]; ok {
			return i, true
		}
	}
	return 0, false
}

// failing names the function c (in f) calls if it is one of the module's
// that may fail the test. A method is known by its name only: any method
// of that name in f's package or in a package f imports counts.
func (m *codebase) failing(f *goFile, c *ast.CallExpr) string {
	var cands []decl
	fun := c.Fun
	switch g := fun.(type) { // a generic function instantiated: Read[T](…)
	case *ast.IndexExpr:
		fun = g.X
	case *ast.IndexListExpr:
		fun = g.X
	}
	switch fun := fun.(type) {
	case *ast.Ident:
		cands = m.funcs[f.dir][fun.Name]
	case *ast.SelectorExpr:
		if x, ok := fun.X.(*ast.Ident); ok {
			if dir, ok := f.imports[x.Name]; ok {
				cands = m.funcs[dir][fun.Sel.Name]
				break
			}
		}
		cands = m.methods[f.dir][fun.Sel.Name]
		for _, dir := range f.imports {
			cands = append(cands, m.methods[dir][fun.Sel.Name]...)
		}
	}
	for _, d := range cands {
		if d.file.test && (!f.test || d.file.dir != f.dir) {
			continue // production code, and other packages, cannot call it
		}
		if m.fails[d.fn] {
			return d.file.dir + "." + d.fn.Name.Name
		}
	}
	return ""
}
