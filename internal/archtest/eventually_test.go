package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNoFailNowInEventually: a require.Eventually condition runs off the
// test goroutine, so a require/t.Fatal inside it cannot stop the test: the
// test waits out the whole timeout and says only "Condition never
// satisfied". Such conditions return false (or use EventuallyWithT).
func TestNoFailNowInEventually(t *testing.T) {
	var bad []string
	fset := token.NewFileSet()
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || !isSel(call.Fun, "Eventually") || len(call.Args) < 2 {
				return true
			}
			lit, ok := call.Args[1].(*ast.FuncLit)
			if !ok {
				return true
			}
			ast.Inspect(lit.Body, func(n ast.Node) bool {
				c, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				if sel, ok := c.Fun.(*ast.SelectorExpr); ok {
					x, _ := sel.X.(*ast.Ident)
					if x != nil && (x.Name == "require" || (x.Name == "t" && strings.HasPrefix(sel.Sel.Name, "Fatal")) || (x.Name == "t" && sel.Sel.Name == "FailNow")) {
						bad = append(bad, fset.Position(c.Pos()).String())
					}
				}
				return true
			})
			return true
		})
		return nil
	})
	require.NoError(t, err)
	require.Empty(t, bad, "require/t.Fatal inside an Eventually condition")
}

func isSel(e ast.Expr, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == name
}
