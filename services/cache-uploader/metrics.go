package cacheuploader

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	uploads  *prometheus.CounterVec
	duration prometheus.Histogram
	links    *prometheus.CounterVec
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
		links: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_cache_uploader_post_merge_links_total",
			Help: "Attributes of post-merge builds given gc roots or output links, by links (gcroots, outputs) and result (placed, older: a newer run's are kept, failed).",
		}, []string{"links", "result"}),
	}
	r.MustRegister(m.uploads, m.duration, m.links)
	return m
}
