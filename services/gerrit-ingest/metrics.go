package gerritingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"nixbus.dev/nixbus/pkg/prom"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

type metrics struct {
	events     *prometheus.CounterVec
	published  *prometheus.CounterVec
	ignored    *prometheus.CounterVec
	malformed  prometheus.Counter
	dropped    prometheus.Counter
	duplicates prometheus.Counter
	connects   *prometheus.CounterVec
	connected  prometheus.Gauge
}

// eventTypes are the types counted by name; others count as "other".
var eventTypes = map[string]bool{
	"patchset-created": true, "change-restored": true, "comment-added": true, "change-merged": true,
	"ref-updated": true, "dropped-output": true, "change-abandoned": true, "reviewer-added": true,
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_gerrit_ingest_events_total", Help: "Gerrit stream events read, by type.",
		}, []string{"type"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_gerrit_ingest_published_total", Help: "Change events published, by kind.",
		}, []string{"kind"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_gerrit_ingest_ignored_total", Help: "Gerrit events that started no run, by reason.",
		}, []string{"reason"}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_gerrit_ingest_malformed_total", Help: "Stream lines that were not events (bad JSON, too long, cut off).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_gerrit_ingest_dropped_output_total", Help: "dropped-output events: Gerrit discarded events for this reader.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixbus_gerrit_ingest_duplicates_total", Help: "Events seen again (after a reconnect) and not republished.",
		}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixbus_gerrit_ingest_connects_total", Help: "Connections to Gerrit's stream, by result.",
		}, []string{"result"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixbus_gerrit_ingest_connected", Help: "1 while the Gerrit event stream is connected.",
		}),
	}
	// Series exist from the start, so rate() and absent() work before
	// the first event.
	for t := range eventTypes {
		m.events.WithLabelValues(t)
	}
	m.events.WithLabelValues("other")
	for _, k := range prom.EnumLabels(nixbuspb.ChangeEvent_Kind(0)) {
		m.published.WithLabelValues(k)
	}
	for _, r := range []string{reasonType, reasonMalformed, reasonProject, reasonKind, reasonComment, reasonOwn, reasonBranch, reasonRef, reasonDeleted} {
		m.ignored.WithLabelValues(r)
	}
	for _, res := range []string{"ok", "error"} {
		m.connects.WithLabelValues(res)
	}
	r.MustRegister(m.events, m.published, m.ignored, m.malformed, m.dropped, m.duplicates, m.connects, m.connected)
	return m
}

func typeLabel(t string) string {
	if eventTypes[t] {
		return t
	}
	return "other"
}
