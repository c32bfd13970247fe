package drv

import (
	"fmt"
	"strings"
	"sync"

	"nixbus.dev/nixbus/pkg/storepath"
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

func (g *StoreGraph) dir() string {
	if g.StoreDir == "" {
		return DefaultStoreDir
	}
	return g.StoreDir
}

// Inputs returns the input derivations of the .drv file at drvPath (a full
// path, or a name inside StoreDir). drvPath is hostile: only a regular
// <StoreDir>/<hash>-<name>.drv file is read (storepath.ReadDrv), and a
// parse error says where, never what the file holds.
func (g *StoreGraph) Inputs(drvPath string) ([]string, error) {
	g.mu.RLock()
	in, ok := g.inputs[drvPath]
	g.mu.RUnlock()
	if ok {
		return in, nil
	}
	file := drvPath
	if !strings.HasPrefix(file, "/") {
		file = g.dir() + "/" + file
	}
	data, err := storepath.ReadDrv(g.dir(), file)
	if err != nil {
		return nil, err
	}
	in, err = parseInputDrvs(data)
	if err != nil {
		return nil, fmt.Errorf("derivation %s: %w", storepath.Show(drvPath), err)
	}
	g.mu.Lock()
	if g.inputs == nil {
		g.inputs = make(map[string][]string)
	}
	g.inputs[drvPath] = in
	g.mu.Unlock()
	return in, nil
}
