package prom

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Consumer names a durable consumer and the connection to ask about it
// (its service's own: a role may look at its own durables).
type Consumer struct {
	JS      jetstream.JetStream
	Stream  string
	Durable string
}

// Consumers reports what JetStream says of durable consumers, asked on
// each scrape with a bounded timeout: messages not yet delivered
// (pending), delivered and not yet acknowledged (ack pending), and among
// these the ones delivered more than once (redelivered). A consumer that
// could not be asked in time has nixbus_jetstream_consumer_up 0 and no
// other series.
type Consumers struct {
	timeout time.Duration

	mu   sync.Mutex
	list []Consumer

	up, pending, ackPending, redelivered *prometheus.Desc
}

// NewConsumers reports on consumers added with Add, waiting at most
// timeout for JetStream on each scrape.
func NewConsumers(timeout time.Duration) *Consumers {
	labels := []string{"stream", "consumer"}
	return &Consumers{
		timeout: timeout,
		up: prometheus.NewDesc("nixbus_jetstream_consumer_up",
			"1 when JetStream answered about the durable consumer on this scrape, 0 when it did not in time or it does not exist.", labels, nil),
		pending: prometheus.NewDesc("nixbus_jetstream_consumer_pending_messages",
			"Messages of the stream the durable consumer has not delivered yet.", labels, nil),
		ackPending: prometheus.NewDesc("nixbus_jetstream_consumer_ack_pending_messages",
			"Messages the durable consumer delivered and no process acknowledged yet.", labels, nil),
		redelivered: prometheus.NewDesc("nixbus_jetstream_consumer_redelivered_messages",
			"Unacknowledged messages the durable consumer delivered more than once.", labels, nil),
	}
}

// Add reports on more consumers.
func (c *Consumers) Add(cons ...Consumer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, cons...)
}

func (c *Consumers) consumers() []Consumer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Consumer(nil), c.list...)
}

// Describe implements prometheus.Collector.
func (c *Consumers) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.redelivered
}

// Collect implements prometheus.Collector: it asks about every consumer
// at once, and gives up after the timeout.
func (c *Consumers) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	list := c.consumers()
	infos, _ := ask(ctx, list)
	for i, co := range list {
		in := infos[i]
		if in == nil {
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, co.Stream, co.Durable)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, co.Stream, co.Durable)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(in.NumPending), co.Stream, co.Durable)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(in.NumAckPending), co.Stream, co.Durable)
		ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, float64(in.NumRedelivered), co.Stream, co.Durable)
	}
}

// Check returns an error naming the first consumer JetStream does not
// know (or did not answer about before ctx ended): readiness.
func (c *Consumers) Check(ctx context.Context) error {
	_, errs := ask(ctx, c.consumers())
	return errors.Join(errs...)
}

// ask asks JetStream about every consumer of list at once: each one's
// info, or why there is none.
func ask(ctx context.Context, list []Consumer) ([]*jetstream.ConsumerInfo, []error) {
	infos := make([]*jetstream.ConsumerInfo, len(list))
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, co := range list {
		wg.Go(func() { infos[i], errs[i] = info(ctx, co) })
	}
	wg.Wait()
	return infos, errs
}

func info(ctx context.Context, co Consumer) (*jetstream.ConsumerInfo, error) {
	cons, err := co.JS.Consumer(ctx, co.Stream, co.Durable)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", co.Durable, co.Stream, err)
	}
	return cons.CachedInfo(), nil
}

// AskTimeout bounds what one scrape waits for JetStream's answers.
const AskTimeout = 2 * time.Second
