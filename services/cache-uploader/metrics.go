package cacheuploader

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	uploads  *prometheus.CounterVec
	duration prometheus.Histogram
	links    *prometheus.CounterVec
	batches  *prometheus.HistogramVec
	nixCalls *prometheus.CounterVec
	paths    *prometheus.CounterVec
	bytes    prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_cache_uploader_uploads_total", Help: "Upload results published, by result (ok, failed).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixbus_cache_uploader_upload_seconds", Help: "Time from taking a build's result to its outputs being in the cache.",
			Buckets: prometheus.ExponentialBuckets(0.05, 3, 10),
		}),
		links: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_cache_uploader_post_merge_links_total",
			Help: "Attributes of post-merge builds given gc roots or output links, by links (gcroots, outputs) and result (placed, older: a newer run's are kept, failed).",
		}, []string{"links", "result"}),
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixbus_cache_uploader_batch_builds", Help: "Builds uploaded per batch, by result (ok, failed).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}, []string{"result"}),
		nixCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_cache_uploader_nix_calls_total", Help: "nix processes run for uploads, by step (sign, copy, path-info).",
		}, []string{"step"}),
		paths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_cache_uploader_s3_paths_total", Help: "Store paths of an s3:// cache's uploads, by result (uploaded; present: found in the bucket, skipped).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_cache_uploader_s3_nar_bytes_total", Help: "Compressed NAR bytes uploaded to an s3:// cache.",
		}),
	}
	// Series exist from the start, so rate() and absent() work before
	// the first upload.
	for _, res := range []string{"ok", "failed"} {
		m.uploads.WithLabelValues(res)
		m.batches.WithLabelValues(res)
	}
	for _, l := range []string{"gcroots", "outputs"} {
		for _, res := range []string{"placed", "older", "failed"} {
			m.links.WithLabelValues(l, res)
		}
	}
	for _, step := range []string{"sign", "copy", "path-info"} {
		m.nixCalls.WithLabelValues(step)
	}
	for _, res := range []string{"uploaded", "present"} {
		m.paths.WithLabelValues(res)
	}
	r.MustRegister(m.uploads, m.duration, m.links, m.batches, m.nixCalls, m.paths, m.bytes)
	return m
}
