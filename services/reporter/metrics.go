package reporter

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	verdicts    *prometheus.CounterVec
	posts       *prometheus.CounterVec
	postSeconds prometheus.Histogram
	// uploadFailures counts builds whose outputs a review reported as not
	// uploaded to the binary cache.
	uploadFailures prometheus.Counter
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
		uploadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_reporter_upload_failures_total",
			Help: "Built derivations a review reported as not uploaded to the binary cache (failed after retries, or not reported in time).",
		}),
	}
	r.MustRegister(m.verdicts, m.posts, m.postSeconds, m.uploadFailures)
	return m
}
