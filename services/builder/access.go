package builder

import "nixbus.dev/nixbus/pkg/bus"

// Access is what a builder does on the bus: its role's permissions.
func Access() bus.Access {
	return bus.Access{
		// One durable per system (bus.ConsumerBuilder); the stream holds
		// nothing but build requests.
		Consumes:  []bus.Durable{{Stream: bus.StreamBuilds, Name: "*"}},
		Reads:     []string{bus.StreamRuns},
		Listens:   []string{bus.RunCancels},
		Logs:      bus.WritesLogs,
		Publishes: []string{bus.RunResults, bus.LogAll, bus.BuilderAll},
	}
}
