package cacheuploader

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	uploads  *prometheus.CounterVec
	duration prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_cache_uploader_uploads_total", Help: "Upload results published, by result (ok, failed).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixbus_cache_uploader_upload_seconds", Help: "Time to sign and copy one build's outputs.",
			Buckets: prometheus.ExponentialBuckets(0.05, 3, 10),
		}),
	}
	r.MustRegister(m.uploads, m.duration)
	return m
}
