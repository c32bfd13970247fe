package reporter

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	verdicts    *prometheus.CounterVec
	posts       *prometheus.CounterVec
	postSeconds prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_reporter_verdicts_total", Help: "Run verdicts received, by status.",
		}, []string{"status"}),
		posts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_reporter_reviews_total", Help: "Reviews given, by channel and result.",
		}, []string{"via", "result"}),
		postSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixbus_reporter_post_seconds", Help: "Time to post one review.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
	}
	r.MustRegister(m.verdicts, m.posts, m.postSeconds)
	return m
}
