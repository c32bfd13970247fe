package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
)

// Each service owns its durable consumers and KV buckets: it names them in
// its Access, and nothing in pkg/ (shared by every service) spells one of
// those names.
func TestPkgNamesNoServicesState(t *testing.T) {
	owned := map[string]string{} // name -> owning service
	for _, svc := range app.Names() {
		a, ok := app.Access(svc)
		require.True(t, ok, svc)
		for _, d := range a.Consumes {
			if d.Name != "*" {
				owned[d.Name] = svc
			}
		}
		for _, b := range a.Buckets {
			owned[b.Name] = svc
		}
	}
	require.NotEmpty(t, owned)
	for file, lits := range stringLiterals(t, "pkg") {
		for _, s := range lits {
			svc, ok := owned[s]
			require.False(t, ok, "%s names %q, %s's own state: it belongs in services/%s", file, s, svc, svc)
		}
	}
}

// stringLiterals maps each non-test Go file under root to its string literals.
func stringLiterals(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	base := filepath.Join("..", "..")
	err := filepath.WalkDir(filepath.Join(base, root), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(base, path)
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					out[filepath.ToSlash(rel)] = append(out[filepath.ToSlash(rel)], s)
				}
			}
			return true
		})
		return nil
	})
	require.NoError(t, err)
	return out
}
