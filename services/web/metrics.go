package web

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	actions     *prometheus.CounterVec
	liveClients prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_web_actions_total", Help: "Buttons pressed on the web page, by action and result.",
		}, []string{"action", "result"}),
		liveClients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixbus_web_live_logs", Help: "Live logs being followed.",
		}),
	}
	for _, a := range []string{"cancel-run", "restart-run", "restart-job"} {
		for _, r := range []string{"ok", "denied", "error"} {
			m.actions.WithLabelValues(a, r)
		}
	}
	reg.MustRegister(m.actions, m.liveClients)
	return m
}
