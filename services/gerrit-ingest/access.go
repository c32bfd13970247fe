package gerritingest

import "nixbus.dev/nixbus/pkg/bus"

// Access is what gerrit-ingest does on the bus: its role's permissions.
func Access() bus.Access { return bus.Access{Publishes: []string{bus.ChangeAll}} }
