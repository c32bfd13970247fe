package planner

import (
	"github.com/prometheus/client_golang/prometheus"

	"nixbus.dev/nixbus/pkg/prom"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

type metrics struct {
	activeRuns   prometheus.Gauge
	building     *prometheus.GaugeVec
	released     *prometheus.CounterVec
	outcomes     *prometheus.CounterVec
	verdicts     *prometheus.CounterVec
	planning     prometheus.Histogram
	resultToNext prometheus.Histogram
	republished  prometheus.Counter
	lag          prometheus.Gauge
	readDelay    prometheus.Histogram
	builderSeen  *prometheus.GaugeVec
	outboxWaits  prometheus.Counter
	cachedFails  prometheus.Counter
}

func newMetrics(r prometheus.Registerer, systems []string) *metrics {
	m := &metrics{
		activeRuns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixbus_planner_active_runs", Help: "Runs started and not yet finished.",
		}),
		building: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nixbus_planner_jobs_building",
			Help: "Derivations released on nix.build.<system> and not yet built: the queue builders of a system work through.",
		}, []string{"system"}),
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_planner_released_total", Help: "Build requests released, by system.",
		}, []string{"system"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_planner_job_outcomes_total", Help: "Job outcomes reported, by status.",
		}, []string{"status"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_planner_verdicts_total", Help: "Run verdicts published, by status.",
		}, []string{"status"}),
		planning: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixbus_planner_planning_seconds", Help: "Time to build a run's DAG and publish its first releases and outcomes.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		resultToNext: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixbus_planner_result_handling_seconds", Help: "Time from reading a build result to publishing what it released.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_planner_republished_total", Help: "Messages published again after a failed or late acknowledgement.",
		}),
		readDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixbus_planner_read_delay_seconds", Help: "Time from a build result being stored to the planner reading it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		builderSeen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nixbus_planner_builder_last_seen_seconds",
			Help: "Unix time a builder of a system was last heard from (its heartbeat).",
		}, []string{"system"}),
		outboxWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_planner_outbox_waits_total",
			Help: "Times a backlog waiting for the outbox to drain woke up: once per acknowledgement at most, never by polling.",
		}),
		cachedFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_planner_cached_failures_total",
			Help: "Jobs failed without building because their derivation failed in an earlier build (the failed-build cache).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixbus_planner_pending_messages", Help: "Messages on the runs stream not yet read by the planner.",
		}),
	}
	// Series exist from the start, so rate() and absent() work before
	// the first run.
	for _, st := range prom.EnumLabels(nixbuspb.JobStatus(0)) {
		m.outcomes.WithLabelValues(st)
	}
	for _, st := range prom.EnumLabels(nixbuspb.RunStatus(0)) {
		m.verdicts.WithLabelValues(st)
	}
	for _, sys := range systems {
		m.building.WithLabelValues(sys)
		m.released.WithLabelValues(sys)
	}
	r.MustRegister(m.activeRuns, m.building, m.released, m.outcomes, m.verdicts, m.planning, m.resultToNext, m.republished, m.lag, m.readDelay, m.builderSeen, m.outboxWaits,
		m.cachedFails)
	return m
}
