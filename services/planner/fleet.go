package planner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/prom"
)

// The fleet is what operators alert on per system: builders connected,
// counted from their heartbeats, and builds queued (released on
// nix.build.<system>, not yet taken by a builder) with the age of the
// oldest, asked of JetStream on each scrape. Every configured system is
// reported from the start (0 builders, 0 queued), so "no builder for a
// system with queued builds" can be alerted on before anything happened.

const (
	// maxSystems bounds the systems reported on: heartbeats and jobs name
	// them, and a label value is a series forever.
	maxSystems = 64
	// maxBuilders bounds the builders counted per system.
	maxBuilders = 4096
	// missedBeats is how many heartbeat intervals a builder may go
	// unheard before it no longer counts as connected.
	missedBeats = 3
	// defaultBeat is the interval of a builder that does not say its own
	// (one older than BuilderAlive.interval_ms).
	defaultBeat = 30 * time.Second
	// maxBeat bounds the interval a builder may claim.
	maxBeat = time.Hour
)

type fleet struct {
	js  jetstream.JetStream
	now func() time.Time

	mu       sync.Mutex
	systems  map[string]struct{}
	builders map[string]map[string]time.Time // system -> builder -> connected until

	connected, queued, oldest *prometheus.Desc
}

func newFleet(js jetstream.JetStream, now func() time.Time, systems []string) *fleet {
	f := &fleet{js: js, now: now, systems: map[string]struct{}{}, builders: map[string]map[string]time.Time{},
		connected: prometheus.NewDesc("nixbus_planner_builders_connected",
			"Builders of a system heard from within three of their heartbeat intervals.", []string{"system"}, nil),
		queued: prometheus.NewDesc("nixbus_planner_builds_queued",
			"Builds released on nix.build.<system> that no builder has taken yet (asked of JetStream on scrape).", []string{"system"}, nil),
		oldest: prometheus.NewDesc("nixbus_planner_oldest_queued_build_age_seconds",
			"Age of the oldest build of a system released and not taken by a builder yet; 0 with none queued.", []string{"system"}, nil),
	}
	for _, s := range systems {
		f.add(s)
	}
	return f
}

// add reports on system from now on; false past maxSystems. Hold f.mu or
// be the constructor.
func (f *fleet) add(system string) bool {
	if _, ok := f.systems[system]; ok {
		return true
	}
	if len(f.systems) >= maxSystems {
		return false
	}
	f.systems[system] = struct{}{}
	return true
}

// heard records builder's heartbeat; it counts as connected for
// missedBeats of its interval.
func (f *fleet) heard(system, builder string, interval time.Duration) {
	if interval <= 0 {
		interval = defaultBeat
	}
	interval = min(interval, maxBeat)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.add(system) {
		return
	}
	b := f.builders[system]
	if b == nil {
		b = map[string]time.Time{}
		f.builders[system] = b
	}
	if _, ok := b[builder]; !ok && len(b) >= maxBuilders {
		return
	}
	b[builder] = f.now().Add(missedBeats * interval)
}

// released notes a system builds were released to.
func (f *fleet) released(system string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.add(system)
}

// snapshot is every system with its connected builders, forgetting the
// builders gone.
func (f *fleet) snapshot() ([]string, map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	counts := map[string]int{}
	for sys, b := range f.builders {
		for name, until := range b {
			if now.Before(until) {
				counts[sys]++
			} else {
				delete(b, name)
			}
		}
	}
	return slices.Sorted(maps.Keys(f.systems)), counts
}

// Describe implements prometheus.Collector.
func (f *fleet) Describe(ch chan<- *prometheus.Desc) {
	ch <- f.connected
	ch <- f.queued
	ch <- f.oldest
}

// Collect implements prometheus.Collector. A system whose queue JetStream
// did not tell in time has no queue series on this scrape.
func (f *fleet) Collect(ch chan<- prometheus.Metric) {
	systems, counts := f.snapshot()
	for _, sys := range systems {
		ch <- prometheus.MustNewConstMetric(f.connected, prometheus.GaugeValue, float64(counts[sys]), sys)
	}
	ctx, cancel := context.WithTimeout(context.Background(), prom.AskTimeout)
	defer cancel()
	stream, err := f.js.Stream(ctx, bus.StreamBuilds)
	if err != nil {
		return
	}
	type queue struct {
		n      uint64
		oldest time.Time
		err    error
	}
	queues := make([]queue, len(systems))
	var wg sync.WaitGroup
	for i, sys := range systems {
		wg.Go(func() {
			q := &queues[i]
			q.n, q.oldest, q.err = f.queue(ctx, stream, sys)
		})
	}
	wg.Wait()
	now := f.now()
	for i, sys := range systems {
		q := queues[i]
		if q.err != nil {
			continue
		}
		age := 0.0
		if !q.oldest.IsZero() {
			age = max(0, now.Sub(q.oldest).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(f.queued, prometheus.GaugeValue, float64(q.n), sys)
		ch <- prometheus.MustNewConstMetric(f.oldest, prometheus.GaugeValue, age, sys)
	}
}

// queue is how many builds of system wait on NIXBUS_BUILDS undelivered,
// and when the oldest was released: past the builders' durable consumer's
// last delivery, or every request of the system when no builder ever
// made the consumer.
func (f *fleet) queue(ctx context.Context, stream jetstream.Stream, system string) (uint64, time.Time, error) {
	subject := bus.BuildSubject(system)
	var n uint64
	from := uint64(1)
	c, err := f.js.Consumer(ctx, bus.StreamBuilds, bus.ConsumerBuilder(system))
	switch {
	case err == nil:
		in := c.CachedInfo()
		n, from = in.NumPending, in.Delivered.Stream+1
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		in, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("queue of %s: %w", system, err)
		}
		n = in.State.Subjects[subject]
	default:
		return 0, time.Time{}, fmt.Errorf("queue of %s: %w", system, err)
	}
	if n == 0 {
		return 0, time.Time{}, nil
	}
	m, err := stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
	if bus.IsNotFound(err) {
		return n, time.Time{}, nil // taken meanwhile
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("oldest queued of %s: %w", system, err)
	}
	return n, m.Time, nil
}
