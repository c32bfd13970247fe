package planner

import "nixbus.dev/nixbus/pkg/bus"

// Bucket is the planner's KV: its replay checkpoint, and the newest run of
// each Gerrit change (to cancel older ones). It is the planner's alone.
const Bucket = "nixbus-planner"

// bucket is how Bucket is created.
var bucket = bus.Bucket{Name: Bucket, Description: "planner checkpoints and the newest run of each change"}

// Access is what the planner does on the bus: its role's permissions, and
// its bucket for `nixbus streams`.
func Access() bus.Access {
	return bus.Access{
		// The runs stream in order, and the checkpoint's message for its
		// time.
		Follows: []string{bus.StreamRuns},
		// Verdicts: a run with one is finished (replays skip it, a
		// restarted job's run already has its vote). Its metrics: the
		// builds each system's builders have yet to take.
		Reads:    []string{bus.StreamRuns, bus.StreamReports, bus.StreamBuilds},
		Inspects: []string{bus.StreamBuilds},
		// Builders' heartbeats.
		Listens:   []string{bus.BuilderAll},
		Buckets:   []bus.Bucket{bucket, failedBucket},
		Publishes: []string{bus.BuildAll, bus.OutcomeAll, bus.VerdictAll, bus.RunCancels},
	}
}
