package web

import "nixbus.dev/nixbus/pkg/bus"

// Access is what the status pages do on the bus: their role's permissions.
func Access() bus.Access {
	return bus.Access{
		// Pages follow runs, reports and live logs, and show stored logs.
		Follows: []string{bus.StreamRuns, bus.StreamReports, bus.StreamLogs},
		Reads:   []string{bus.StreamLogs},
		Logs:    bus.ReadsLogs,
		// An admin's actions: cancel a run, run a change again, restart a job.
		Publishes: []string{bus.RunCancels, bus.ChangeAll, bus.RunSubject("*", bus.RunRestartKind)},
	}
}
