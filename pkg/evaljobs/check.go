package evaljobs

import (
	"fmt"
	"strings"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/printable"
	"nixbus.dev/nixbus/pkg/storepath"
)

// maxFieldBytes bounds a job's derivation name and system as carried.
const maxFieldBytes = 256

// Check takes a record as the evaluator reported it, which the flake
// controls, and returns the job nixbus may act on: the derivation must be
// <storeDir>/<hash>-<name>.drv and every output <storeDir>/<hash>-<name>
// (or unknown, for content-addressed outputs), with output names Nix
// allows; otherwise the job becomes a failed one saying why (no path is
// ever read or built for it). Name and system come back printable and
// bounded, an error message printable.
func Check(j Job, storeDir string) Job {
	j.Name = bus.Truncate(printable.Line(j.Name), maxFieldBytes)
	j.System = bus.Truncate(printable.Line(j.System), maxFieldBytes)
	if j.Error != "" {
		j.Error = printable.Text(j.Error)
		j.DrvPath, j.Outputs = "", nil
		return j
	}
	fail := func(err error) Job {
		j.Error = "the evaluation handed over a job nixbus refuses: " + err.Error()
		j.DrvPath, j.Outputs, j.CacheKnown, j.Cached = "", nil, false, false
		return j
	}
	if err := storepath.CheckDrv(storeDir, j.DrvPath); err != nil {
		return fail(fmt.Errorf("drvPath: %w", err))
	}
	for name, p := range j.Outputs {
		if !outputName(name) {
			return fail(fmt.Errorf("output name %s is not one nix allows", storepath.Show(name)))
		}
		if p == "" {
			continue
		}
		if err := storepath.Check(storeDir, p); err != nil {
			return fail(fmt.Errorf("output %s: %w", name, err))
		}
	}
	return j
}

// outputName reports whether s is a name Nix accepts for an output.
func outputName(s string) bool {
	if s == "" || len(s) > 211 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("+-._?=", c) >= 0:
		default:
			return false
		}
	}
	return true
}
