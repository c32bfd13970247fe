package reporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"nixbus.dev/nixbus/pkg/prom"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

type metrics struct {
	verdicts    *prometheus.CounterVec
	posts       *prometheus.CounterVec
	postSeconds prometheus.Histogram
	// uploadFailures counts builds whose outputs a review reported as not
	// uploaded to the binary cache.
	uploadFailures prometheus.Counter
	// eventToVote is the time from the change event (its Gerrit time) to
	// the review posted: what a contributor waits.
	eventToVote *prometheus.HistogramVec
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
		eventToVote: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixbus_reporter_event_to_vote_seconds", Help: "Time from a change event (Gerrit's time of it) to its run's review being posted, by run status.",
			Buckets: prometheus.ExponentialBuckets(10, 2, 13),
		}, []string{"status"}),
	}
	// Every series exists from the start, so rate() and absent() work
	// before the first run.
	for _, st := range prom.EnumLabels(nixbuspb.RunStatus(0)) {
		m.verdicts.WithLabelValues(st)
		m.eventToVote.WithLabelValues(st)
	}
	for _, via := range []string{"gerrit", "gerrit-started", "stdout"} {
		for _, res := range []string{"ok", "error"} {
			m.posts.WithLabelValues(via, res)
		}
	}
	r.MustRegister(m.verdicts, m.posts, m.postSeconds, m.uploadFailures, m.eventToVote)
	return m
}
