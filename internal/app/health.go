package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/prom"
)

// health answers /healthz and /readyz for every service of this
// instance. Healthy: each service's NATS connection is CONNECTED. Ready:
// healthy, JetStream answers each service, and every durable consumer the
// services work through exists (they create theirs when they start).
type health struct {
	mu        sync.Mutex
	services  []serviceConn
	consumers *prom.Consumers
}

type serviceConn struct {
	name string
	nc   *nats.Conn
	js   jetstream.JetStream
	// started, when the service says, is whether it has started (one
	// with no durable consumer to show it, like the planner).
	started func() bool
}

// starter is a service that says when it has started.
type starter interface{ Started() bool }

func (h *health) add(name string, svc Service, nc *nats.Conn, js jetstream.JetStream, durables []bus.Durable) {
	var started func() bool
	if s, ok := svc.(starter); ok {
		started = s.Started
	}
	h.mu.Lock()
	h.services = append(h.services, serviceConn{name, nc, js, started})
	h.mu.Unlock()
	for _, d := range durables {
		h.consumers.Add(prom.Consumer{JS: js, Stream: d.Stream, Durable: d.Name})
	}
}

func (h *health) list() []serviceConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]serviceConn(nil), h.services...)
}

// connected says which services' NATS connections are not CONNECTED (every
// one, so an operator sees the whole picture), or nil.
func (h *health) connected() error {
	var errs []error
	for _, s := range h.list() {
		if st := s.nc.Status(); st != nats.CONNECTED {
			errs = append(errs, fmt.Errorf("nats connection of %s: %s", s.name, st))
		}
	}
	return errors.Join(errs...)
}

// ready is why this instance is not ready, or nil.
func (h *health) ready(ctx context.Context) error {
	if err := h.connected(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, prom.AskTimeout)
	defer cancel()
	for _, s := range h.list() {
		if _, err := s.js.AccountInfo(ctx); err != nil {
			return fmt.Errorf("jetstream for %s: %w", s.name, err)
		}
		if s.started != nil && !s.started() {
			return fmt.Errorf("not started: %s", s.name)
		}
	}
	if err := h.consumers.Check(ctx); err != nil {
		return fmt.Errorf("not started: %w", err)
	}
	return nil
}

func (h *health) handle(mux *http.ServeMux) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { answer(w, h.connected()) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { answer(w, h.ready(r.Context())) })
}

func answer(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "%v\n", err)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}
