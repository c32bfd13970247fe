// Package archtest holds tests of the code's shape: rules the compiler does
// not enforce on its own.
package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "nixbus.dev/nixbus/"

// goFiles maps each Go file under root (relative to the repo) to its imports.
func goFiles(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(filepath.Join("..", "..", root), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join("..", ".."), path)
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			out[filepath.ToSlash(rel)] = append(out[filepath.ToSlash(rel)], p)
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// Services meet only on the bus: no service imports another (DESIGN.md,
// STYLE.md habit 5).
func TestServicesDoNotImportEachOther(t *testing.T) {
	for file, imports := range goFiles(t, "services") {
		own := strings.SplitN(strings.TrimPrefix(file, "services/"), "/", 2)[0]
		for _, imp := range imports {
			rest, ok := strings.CutPrefix(imp, module+"services/")
			if !ok {
				continue
			}
			other := strings.SplitN(rest, "/", 2)[0]
			require.Equal(t, own, other, "%s imports %s: services share only proto/ and pkg/", file, imp)
		}
	}
}

// pkg/ is shared infrastructure: it may not reach into a service or the wiring.
func TestPkgImportsNoServiceOrApp(t *testing.T) {
	for file, imports := range goFiles(t, "pkg") {
		for _, imp := range imports {
			require.False(t, strings.HasPrefix(imp, module+"services/") || strings.HasPrefix(imp, module+"internal/app"),
				"%s imports %s", file, imp)
		}
	}
}

// Outside services/, only the wiring (internal/app, the e2e and deploy
// tests) names a service, and it names only the service itself: what else
// it needs of one (the planner's scheduling core for `nixbus plan`, change
// events for `nixbus trigger`) lives in pkg/ or internal/, so no service's
// helpers have a second user the service cannot see.
func TestOnlyTheWiringImportsServices(t *testing.T) {
	for _, root := range []string{"internal", "cmd", "pkg"} {
		for file, imports := range goFiles(t, root) {
			for _, imp := range imports {
				rest, ok := strings.CutPrefix(imp, module+"services/")
				if !ok {
					continue
				}
				require.True(t, strings.HasPrefix(file, "internal/app/"), "%s imports %s: only internal/app wires services", file, imp)
				require.NotContains(t, rest, "/", "%s imports %s: the wiring uses a service's New, Config and Deps, not its helpers", file, imp)
			}
		}
	}
}

// The wire contract depends on protobuf and nothing else.
func TestProtoModuleDependsOnProtobufOnly(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "proto", "go.mod"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "require ") || (strings.Contains(line, " v") && !strings.HasPrefix(line, "go ") && !strings.HasPrefix(line, "module ")) {
			require.Contains(t, line, "google.golang.org/protobuf", "proto/go.mod: %s", line)
		}
	}
}

// main stays thin: every cmd/*/main.go is under 100 lines.
func TestMainsAreThin(t *testing.T) {
	for file := range goFiles(t, "cmd") {
		data, err := os.ReadFile(filepath.Join("..", "..", file))
		require.NoError(t, err)
		require.Less(t, strings.Count(string(data), "\n"), 100, file)
	}
}
