package builder

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	duration *prometheus.HistogramVec
	running  *prometheus.GaugeVec
	results  *prometheus.CounterVec
	retries  *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) *metrics {
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
	}
	r.MustRegister(m.duration, m.running, m.results, m.retries)
	return m
}
