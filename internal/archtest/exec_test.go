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

// TestChildrenStartThroughNixExec: every child process of the services
// starts from nix.Exec, which gives it a process group killed when its
// context ends, a parent-death signal and a WaitDelay, so no nix outlives
// the service or hangs it. Only these files may call exec.Command
// themselves.
func TestChildrenStartThroughNixExec(t *testing.T) {
	allowed := map[string]string{
		"pkg/nix/proc.go": "nix.Exec itself",
		"services/evaluator/internal/fetch/fetch.go": "git, not nix",
		"internal/gerrittest/repo.go":                "test helper",
		"internal/gerrittest/server.go":              "test helper",
		"internal/corpus/corpus.go":                  "test helper",
	}
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	var bad []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if _, ok := allowed[filepath.ToSlash(rel)]; ok {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "exec" && strings.HasPrefix(sel.Sel.Name, "Command") {
					bad = append(bad, fset.Position(sel.Pos()).String())
				}
			}
			return true
		})
		return nil
	})
	require.NoError(t, err)
	require.Empty(t, bad, "exec.Command outside nix.Exec: use (*nix.Nix).Exec and Run/Start")
}
