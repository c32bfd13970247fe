package reporter

import "nixbus.dev/nixbus/pkg/bus"

// The reporter's durable consumers and bucket. Every reporter process binds
// to the same consumers, which is how a second one shares the work.
const (
	// Consumer reads verdicts and posts reviews.
	Consumer = "reporter"
	// ConsumerStarted posts the optional "build started" messages.
	ConsumerStarted = "reporter-started"
	// VotesBucket is the reporter's KV: one key per run it has voted on,
	// one per later revision of its verdict (after a restarted job), and
	// the summary of the run's last review to compare those with.
	VotesBucket = "nixbus-votes"
)

// votesBucket is how VotesBucket is created: a vote is kept as long as
// the run's history.
var votesBucket = bus.Bucket{Name: VotesBucket, Description: "runs the reporter has voted on", Expires: true}

// Access is what the reporter does on the bus: its role's permissions, and
// its bucket for `nixbus streams`.
func Access() bus.Access {
	return bus.Access{
		Consumes: []bus.Durable{{Stream: bus.StreamReports, Name: Consumer}, {Stream: bus.StreamRuns, Name: ConsumerStarted}},
		// A review waits for its run's outcomes and uploads; a log link of
		// a build still running answers with its live log.
		Follows: []string{bus.StreamReports, bus.StreamLogs},
		// And the run's newest verdict: a revision older than it is not
		// reviewed (revision.go).
		Reads:     []string{bus.StreamLogs, bus.StreamReports},
		Buckets:   []bus.Bucket{votesBucket},
		Logs:      bus.ReadsLogs,
		Publishes: []string{bus.ReviewAll},
	}
}
