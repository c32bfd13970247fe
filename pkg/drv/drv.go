// Package drv reads Nix derivation graphs and turns them into what a CI
// scheduler needs: the graph between the job derivations (Reduce), by
// which each job waits for the jobs reachable from it through non-job
// derivations. It reads `nix show-derivation -r` / `nix derivation show -r`
// JSON or .drv files (ATerm) directly, in time linear in derivations plus
// edges, without materialising closures or job-to-job pairs.
package drv

import (
	"strings"

	"nixbus.dev/nixbus/pkg/storepath"
)

// DefaultStoreDir is where derivation paths live unless a caller says otherwise.
const DefaultStoreDir = storepath.DefaultDir

// Graph gives a derivation's input derivations (the keys of its inputDrvs).
type Graph interface {
	Inputs(drvPath string) ([]string, error)
}

// MapGraph is an in-memory Graph: derivation path -> input derivation paths.
type MapGraph map[string][]string

// Inputs returns p's input derivations; a derivation the map does not know
// is a leaf (nil, nil).
func (g MapGraph) Inputs(p string) ([]string, error) { return g[p], nil }

// normalise turns a derivation name as newer nix prints it (a basename
// without the store directory) into a full store path.
func normalise(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	return DefaultStoreDir + "/" + p
}
