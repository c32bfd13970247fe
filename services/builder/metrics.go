package builder

import (
	"github.com/prometheus/client_golang/prometheus"

	"nixbus.dev/nixbus/pkg/prom"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/builder/internal/nixbuild"
)

type metrics struct {
	duration *prometheus.HistogramVec
	running  *prometheus.GaugeVec
	results  *prometheus.CounterVec
	retries  *prometheus.CounterVec
	// waited is the time from a build's release (its request stored on
	// nix.build.<system>) to a builder starting it.
	waited *prometheus.HistogramVec
	// cancelLookups counts the runs stream lookups for a cancellation
	// before a build.
	cancelLookups prometheus.Counter
}

func newMetrics(r prometheus.Registerer, system string) *metrics {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixbus_builder_build_duration_seconds", Help: "Time one build took, by system and status.",
			Buckets: prometheus.ExponentialBuckets(0.1, 3, 12),
		}, []string{"system", "status"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nixbus_builder_builds_running", Help: "Builds running now, by system.",
		}, []string{"system"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_builder_results_total", Help: "Build results published, by system and status.",
		}, []string{"system", "status"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_builder_retries_total", Help: "Builds tried again after a transient infrastructure failure, by system and reason.",
		}, []string{"system", "reason"}),
		waited: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixbus_builder_release_to_start_seconds", Help: "Time from a build's release by the planner to a builder starting it (first delivery), by system.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 14),
		}, []string{"system"}),
	}
	// This builder's system's series exist from the start.
	m.running.WithLabelValues(system)
	m.waited.WithLabelValues(system)
	for _, reason := range nixbuild.TransientReasons() {
		m.retries.WithLabelValues(system, reason)
	}
	for _, st := range prom.EnumLabels(nixbuspb.BuildStatus(0)) {
		m.duration.WithLabelValues(system, st)
		m.results.WithLabelValues(system, st)
	}
	m.cancelLookups = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nixbus_builder_cancel_lookups_total",
		Help: "Lookups of a run's cancellation on the runs stream before a build (one per run while the subscription to cancellations misses nothing).",
	})
	r.MustRegister(m.duration, m.running, m.results, m.retries, m.waited, m.cancelLookups)
	return m
}
