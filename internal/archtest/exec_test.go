package archtest

import (
	"go/ast"
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
		"internal/nixtest/nixtest.go":                "test helper",
	}
	code := parseModule(t)
	root := filepath.Join("..", "..")
	var bad []string
	for _, f := range code.files {
		name := code.fset.Position(f.ast.Pos()).Filename
		rel, _ := filepath.Rel(root, name)
		if _, ok := allowed[filepath.ToSlash(rel)]; ok || strings.HasSuffix(name, "_test.go") {
			continue
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "exec" && strings.HasPrefix(sel.Sel.Name, "Command") {
					bad = append(bad, code.fset.Position(sel.Pos()).String())
				}
			}
			return true
		})
	}
	require.Empty(t, bad, "exec.Command outside nix.Exec: use (*nix.Nix).Exec and Run/Start")
}
