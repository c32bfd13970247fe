package drv

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// StoreGraph is a Graph that reads .drv files from the store directory on
// demand, parsing only their input derivations and caching them. It is safe
// for concurrent use.
type StoreGraph struct {
	// StoreDir is where relative derivation names are looked up
	// (DefaultStoreDir unless set before first use).
	StoreDir string

	mu     sync.RWMutex
	inputs map[string][]string
}

// NewStoreGraph returns a StoreGraph on the default store directory.
func NewStoreGraph() *StoreGraph {
	return &StoreGraph{StoreDir: DefaultStoreDir, inputs: make(map[string][]string)}
}

// Inputs returns the input derivations of the .drv file at drvPath (a full
// path, or a name inside StoreDir).
func (g *StoreGraph) Inputs(drvPath string) ([]string, error) {
	g.mu.RLock()
	in, ok := g.inputs[drvPath]
	g.mu.RUnlock()
	if ok {
		return in, nil
	}
	file := drvPath
	if !filepath.IsAbs(file) {
		dir := g.StoreDir
		if dir == "" {
			dir = DefaultStoreDir
		}
		file = filepath.Join(dir, file)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read derivation: %w", err)
	}
	in, err = parseInputDrvs(data)
	if err != nil {
		return nil, fmt.Errorf("derivation %s: %w", drvPath, err)
	}
	g.mu.Lock()
	if g.inputs == nil {
		g.inputs = make(map[string][]string)
	}
	g.inputs[drvPath] = in
	g.mu.Unlock()
	return in, nil
}
