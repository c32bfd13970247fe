package planner

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// gauges are the values of a metric's series by their system label
// (or by status, for the counters by status).
func gauges(t require.TestingT, g prometheus.Gatherer, name string) map[string]float64 {
	fams, err := g.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetValue()
			}
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func beat(sys, name string, every time.Duration) *nixbuspb.BuilderAlive {
	return &nixbuspb.BuilderAlive{System: sys, Builder: name, IntervalMs: every.Milliseconds()}
}

// TestPlannerFleetMetrics: every configured system is reported from the
// start; builders count from their heartbeats until three intervals pass
// unheard; queued builds and the oldest one's age follow NIXBUS_BUILDS,
// before any builder made its consumer and after one took a build.
func TestPlannerFleetMetrics(t *testing.T) {
	e := newEnv(t)
	const sysA, sysB = "x86_64-linux", "aarch64-linux"
	cfg := testConfig()
	cfg.Systems = []string{sysA, sysB}
	reg := prometheus.NewRegistry()
	clock := newClock()
	e.startPlannerWith(cfg, reg, clock.now)

	zero := map[string]float64{sysA: 0, sysB: 0}
	require.Equal(t, zero, gauges(t, reg, "nixbus_planner_builders_connected"))
	require.Equal(t, zero, gauges(t, reg, "nixbus_planner_builds_queued"))
	require.Equal(t, zero, gauges(t, reg, "nixbus_planner_oldest_queued_build_age_seconds"))
	require.Equal(t, map[string]float64{"succeeded": 0, "failed": 0, "cancelled": 0}, gauges(t, reg, "nixbus_planner_verdicts_total"))
	require.Contains(t, gauges(t, reg, "nixbus_planner_job_outcomes_total"), "skipped")

	nc := e.js.Conn()
	send := func(m *nixbuspb.BuilderAlive) {
		data, err := bus.Encode(m)
		require.NoError(t, err)
		require.NoError(t, nc.Publish(bus.BuilderSubject(m.GetSystem()), data))
	}
	// Heartbeats are core NATS: sent until heard (the planner subscribes
	// once it has started).
	heard := func(want float64, beats ...*nixbuspb.BuilderAlive) {
		t.Helper()
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			for _, b := range beats {
				send(b)
			}
			assert.Equal(c, want, gauges(c, reg, "nixbus_planner_builders_connected")[sysA])
		}, 10*time.Second, 10*time.Millisecond)
	}
	heard(1, beat(sysA, "b1", time.Second))
	heard(2, beat(sysA, "b1", time.Second), beat(sysA, "b2", time.Second))
	require.Equal(t, 0.0, gauges(t, reg, "nixbus_planner_builders_connected")[sysB])
	clock.add(3 * time.Second) // three beats unheard: gone
	heard(0)

	// Two builds released for sysA, none taken: no builder consumer yet.
	for i := range 2 {
		data, err := bus.Encode(&nixbuspb.BuildRequest{RunId: "r1", DrvPath: fmt.Sprintf("/nix/store/%d.drv", i), System: sysA})
		require.NoError(t, err)
		_, err = e.js.Publish(t.Context(), bus.BuildSubject(sysA), data)
		require.NoError(t, err)
	}
	stream, err := e.js.Stream(t.Context(), bus.StreamBuilds)
	require.NoError(t, err)
	first, err := stream.GetMsg(t.Context(), 1)
	require.NoError(t, err)
	second, err := stream.GetMsg(t.Context(), 2)
	require.NoError(t, err)
	clock.add(first.Time.Add(100 * time.Second).Sub(clock.now()))
	require.Equal(t, map[string]float64{sysA: 2, sysB: 0}, gauges(t, reg, "nixbus_planner_builds_queued"))
	require.InDelta(t, 100, gauges(t, reg, "nixbus_planner_oldest_queued_build_age_seconds")[sysA], 0.001)

	// A builder takes the first: one left, the second the oldest.
	cons, err := bus.EnsureConsumer(t.Context(), e.js, bus.WorkOptions{Stream: bus.StreamBuilds, Durable: bus.ConsumerBuilder(sysA), Filter: bus.BuildSubject(sysA)})
	require.NoError(t, err)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	for range batch.Messages() {
	}
	require.NoError(t, batch.Error())
	require.Equal(t, map[string]float64{sysA: 1, sysB: 0}, gauges(t, reg, "nixbus_planner_builds_queued"))
	require.InDelta(t, 100-second.Time.Sub(first.Time).Seconds(), gauges(t, reg, "nixbus_planner_oldest_queued_build_age_seconds")[sysA], 0.001)
}

// TestFleetBounds: a builder is connected for three of its own intervals
// (30 s each when it does not say), and heartbeats naming ever new
// systems add at most maxSystems series.
func TestFleetBounds(t *testing.T) {
	clock := newClock()
	f := newFleet(nil, clock.now, []string{"x86_64-linux"})
	f.heard("x86_64-linux", "old", 0)
	f.heard("x86_64-linux", "fast", time.Second)
	_, counts := f.snapshot()
	require.Equal(t, 2, counts["x86_64-linux"])
	clock.add(3 * time.Second)
	_, counts = f.snapshot()
	require.Equal(t, 1, counts["x86_64-linux"], "the 1 s builder is gone after 3 s")
	clock.add(87 * time.Second)
	_, counts = f.snapshot()
	require.Equal(t, 0, counts["x86_64-linux"], "the default 30 s builder is gone after 90 s")

	for i := range 2 * maxSystems {
		f.heard(fmt.Sprintf("sys%d", i), "b", time.Second)
	}
	systems, _ := f.snapshot()
	require.Len(t, systems, maxSystems)
	require.Contains(t, systems, "x86_64-linux", "configured systems stay")
}
