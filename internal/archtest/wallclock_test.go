package archtest

import (
	"go/ast"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNoWallClockAssertions: a test asserts what happened, not how long
// it took: a bound on time.Since fails on a loaded machine, and a wait
// that already ends the test bounds the time anyway. (Benchmarks measure
// time; they report it, they do not assert on it.)
func TestNoWallClockAssertions(t *testing.T) {
	code := parseModule(t)
	var bad []string
	for _, f := range code.files {
		if !strings.HasSuffix(code.fset.Position(f.ast.Pos()).Filename, "_test.go") {
			continue
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || (x.Name != "require" && x.Name != "assert") {
				return true
			}
			for _, arg := range call.Args {
				ast.Inspect(arg, func(n ast.Node) bool {
					c, ok := n.(*ast.CallExpr)
					if ok && (isPkgCall(c, "time", "Since") || isPkgCall(c, "time", "Until")) {
						bad = append(bad, code.fset.Position(c.Pos()).String())
					}
					return true
				})
			}
			return true
		})
	}
	require.Empty(t, bad, "an assertion on elapsed wall-clock time")
}

func isPkgCall(c *ast.CallExpr, pkg, name string) bool {
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == pkg
}
