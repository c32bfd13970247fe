package evaluator

import (
	"context"
	"math"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/prom"
)

type metrics struct {
	evalSeconds *prometheus.HistogramVec
	runs        *prometheus.CounterVec
	jobs        prometheus.Counter
	dropped     prometheus.Counter
	errors      prometheus.Counter
	garbage     prometheus.Counter
	running     prometheus.Gauge
}

func newMetrics(r prometheus.Registerer, js jetstream.JetStream) *metrics {
	m := &metrics{
		evalSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixbus_evaluator_eval_seconds", Help: "Time to evaluate one change's hydraJobs, by evaluator.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14),
		}, []string{"evaluator"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_evaluator_runs_total", Help: "Evaluations finished, by result (ok, error).",
		}, []string{"result"}),
		jobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_evaluator_jobs_total", Help: "Jobs evaluated and published, eval errors included.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_evaluator_jobs_dropped_total", Help: "Jobs dropped because their system is not built here.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_evaluator_job_errors_total", Help: "Jobs that did not evaluate.",
		}),
		garbage: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_evaluator_garbage_lines_total", Help: "nix-eval-jobs output lines that were not a job record.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixbus_evaluator_evaluations_running", Help: "Change events this evaluator is evaluating now.",
		}),
	}
	// The queue every evaluator shares, asked of JetStream on scrape (NaN
	// when it did not answer in time).
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nixbus_evaluator_evaluations_queued", Help: "Change events waiting for an evaluator (not yet delivered to one).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), prom.AskTimeout)
		defer cancel()
		c, err := js.Consumer(ctx, bus.StreamChanges, Consumer)
		if err != nil {
			return math.NaN()
		}
		return float64(c.CachedInfo().NumPending)
	})
	for _, res := range []string{"ok", "error"} {
		m.runs.WithLabelValues(res)
	}
	for _, ev := range []string{"builtin", "nix-eval-jobs"} {
		m.evalSeconds.WithLabelValues(ev)
	}
	r.MustRegister(m.evalSeconds, m.runs, m.jobs, m.dropped, m.errors, m.garbage, m.running, queued)
	return m
}
