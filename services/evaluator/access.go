package evaluator

import "nixbus.dev/nixbus/pkg/bus"

// Consumer is the evaluators' durable consumer of change events: every
// evaluator process binds to it, which is how a second one shares the work.
const Consumer = "evaluator"

// Access is what the evaluator does on the bus: its role's permissions.
func Access() bus.Access {
	return bus.Access{
		Consumes: []bus.Durable{{Stream: bus.StreamChanges, Name: Consumer}},
		Reads:    []string{bus.StreamRuns},
		Publishes: []string{bus.RunSubject("*", bus.RunStartedKind), bus.RunSubject("*", bus.RunJobKind),
			bus.RunSubject("*", bus.RunGraphKind), bus.RunSubject("*", bus.RunEvalKind)},
	}
}
