// Package planner owns each run's DAG. It reads everything on the runs
// stream (run started, jobs, evaluation done, build results, cancellations)
// in order with an ordered consumer, releases each job on nix.build.<system>
// once the jobs it depends on succeeded, reports one outcome per job and a
// verdict per run, and cancels runs a newer patchset supersedes.
//
// Its durable state is the stream itself plus a checkpoint in KV (the
// lowest stream sequence of any unfinished run). On start it replays from
// the checkpoint; what it publishes depends only on the stream, and carries
// the message ids of pkg/bus, so a replay publishes nothing twice.
package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"nixbus.dev/nixbus/pkg/bus"
)

// Deps are the planner's collaborators.
type Deps struct {
	JS         jetstream.JetStream
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// TracerProvider gives each run a "plan" span (nil: no spans; the
	// trace context is passed on all the same).
	TracerProvider trace.TracerProvider
}

// Service is a planner.
type Service struct {
	cfg     Config
	js      jetstream.JetStream
	logger  *slog.Logger
	metrics *metrics
	fleet   *fleet
	tracer  trace.Tracer
	// beforePlan, when set (by tests), runs in the background task before
	// a run's DAG is built.
	beforePlan func(ctx context.Context, runID string)
	// now is the clock deadlines are measured with (tests move it).
	now func() time.Time
	// started is true while Run reads the runs stream and hears builders.
	started atomic.Bool
}

// Started reports whether the planner reads the runs stream and hears
// the builders' heartbeats: its readiness (/readyz).
func (s *Service) Started() bool { return s.started.Load() }

// New checks cfg and returns a planner.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Logger == nil {
		return nil, errors.New("planner: JS and Logger are required")
	}
	if d.Registerer == nil {
		d.Registerer = prometheus.NewRegistry()
	}
	s := &Service{cfg: cfg, js: d.JS, logger: d.Logger.With("service", "planner"), metrics: newMetrics(d.Registerer, cfg.Systems),
		tracer: bus.Tracer(d.TracerProvider, "nixbus.dev/nixbus/services/planner"), now: time.Now}
	s.fleet = newFleet(d.JS, func() time.Time { return s.now() }, cfg.Systems)
	if err := d.Registerer.Register(s.fleet); err != nil {
		return nil, fmt.Errorf("planner: register metrics: %w", err)
	}
	return s, nil
}

// Run plans runs until ctx ends, then returns nil.
func (s *Service) Run(ctx context.Context) error {
	err := s.run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (s *Service) run(ctx context.Context) error {
	if err := bus.EnsureStreams(ctx, s.js, bus.StreamOptions{}, bucket, failedBucket); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	kv, err := s.js.KeyValue(ctx, Bucket)
	if err != nil {
		return fmt.Errorf("planner: open %s: %w", Bucket, err)
	}
	from, err := loadCheckpoint(ctx, kv)
	if err != nil {
		return fmt.Errorf("planner: load checkpoint: %w", err)
	}
	stream, err := s.js.Stream(ctx, bus.StreamRuns)
	if err != nil {
		return fmt.Errorf("planner: open %s: %w", bus.StreamRuns, err)
	}
	if last := stream.CachedInfo().State.LastSeq; from > last+1 {
		// The stream was recreated: its sequences started again.
		s.logger.Warn("checkpoint beyond the runs stream, replaying it all", "checkpoint", from, "last", last)
		from = 0
	}
	reports, err := s.js.Stream(ctx, bus.StreamReports)
	if err != nil {
		return fmt.Errorf("planner: open %s: %w", bus.StreamReports, err)
	}
	fails, err := openFailCache(ctx, s.js, s.cfg.FailedCacheTTL, s.logger)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	defer fails.stop()
	if d := stream.CachedInfo().Config.Duplicates; d < s.cfg.RunTimeout {
		s.logger.Warn("the runs stream's duplicate window is shorter than the run timeout: after a restart, what an unfinished run published more than that ago may be published again (raise --nats.duplicate-window)",
			"duplicate_window", d, "run_timeout", s.cfg.RunTimeout)
	}
	// Replay reads no further back than the run deadline; runs older than
	// that without a verdict are ended before it (see endStale).
	bound := s.now().Add(-s.cfg.RunTimeout)
	cc, err := s.replayFrom(ctx, stream, from, bound)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	cons, err := stream.OrderedConsumer(ctx, cc)
	if err != nil {
		return fmt.Errorf("planner: consume %s: %w", bus.StreamRuns, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("planner: consume %s: %w", bus.StreamRuns, err)
	}
	s.logger.Info("planner started", "from", from)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	msgs := make(chan jetstream.Msg, 1024)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer it.Stop()
		for {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					return
				}
				s.logger.Warn("read runs stream", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			select {
			case msgs <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()

	// Builders' heartbeats, over core NATS (see deadlines.go).
	alive := make(chan *nats.Msg, 256)
	sub, err := s.js.Conn().ChanSubscribe(bus.BuilderAll, alive)
	if err != nil {
		return fmt.Errorf("planner: subscribe %s: %w", bus.BuilderAll, err)
	}
	defer func() {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			s.logger.Warn("unsubscribe", "subject", bus.BuilderAll, "err", err)
		}
	}()
	s.started.Store(true)
	defer s.started.Store(false)

	out := newOutbox(s.js, kv, s.logger, s.cfg, s.metrics)
	wg.Add(1)
	go func() {
		defer wg.Done()
		out.run(ctx)
	}()

	st := newRunMachine(s, out, reports, func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	})
	st.fails = fails
	if err := st.endStale(ctx, from, bound); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("planner: %w", err)
	}
	tick := time.NewTicker(s.cfg.CheckpointInterval)
	defer tick.Stop()
	ready := make(chan struct{})
	close(ready)
	saved := from
	for {
		// A backlog takes turns with incoming messages, and only while the
		// outbox is not busy with earlier ones, so that a large run's
		// releases never queue in front of another run's for long.
		var turn, drained <-chan struct{}
		if len(st.busy) > 0 {
			if out.inFlight() < backlogInFlight {
				turn = ready
			} else {
				drained = out.settled()
			}
		}
		var err error
		select {
		case <-ctx.Done():
			return nil
		case msg := <-msgs:
			err = st.handle(ctx, msg)
		case p := <-st.planned:
			err = st.install(ctx, p)
		case <-turn:
			err = st.drain(ctx)
		case <-drained:
			s.metrics.outboxWaits.Inc()
		case m := <-alive:
			st.builderAlive(m.Data)
		case e := <-fails.updates():
			fails.update(e)
		case <-tick.C:
			// Deadlines are checked as often as checkpoints are saved.
			if err = st.expire(ctx); err != nil {
				break
			}
			if cp := st.checkpoint(); cp != saved && st.lastSeq > 0 {
				err = out.checkpoint(ctx, cp)
				saved = cp
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// replayFrom is where reading the runs stream starts: at the checkpoint,
// but never more than the run deadline back. A run older than that has
// passed its deadline: it was finished, or it cannot be anymore.
func (s *Service) replayFrom(ctx context.Context, stream jetstream.Stream, from uint64, bound time.Time) (jetstream.OrderedConsumerConfig, error) {
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.RunAll}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		m, err := stream.GetMsg(ctx, from)
		switch {
		case err == nil && !m.Time.Before(bound):
			cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
			return cc, nil
		case err != nil && !bus.IsNotFound(err):
			return cc, fmt.Errorf("read checkpoint message %d: %w", from, err)
		}
	}
	// No checkpoint, or one older than the deadline (or gone): by time.
	if first := stream.CachedInfo().State.FirstTime; first.Before(bound) {
		s.logger.Info("replay starts at the run deadline", "checkpoint", from, "since", bound)
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &bound
	}
	return cc, nil
}
