package evaluator

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	evalSeconds *prometheus.HistogramVec
	runs        *prometheus.CounterVec
	jobs        prometheus.Counter
	dropped     prometheus.Counter
	errors      prometheus.Counter
	garbage     prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
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
	}
	r.MustRegister(m.evalSeconds, m.runs, m.jobs, m.dropped, m.errors, m.garbage)
	return m
}
