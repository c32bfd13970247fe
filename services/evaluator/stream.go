package evaluator

import (
	"context"
	"hash/maphash"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/drv"
	"nixbus.dev/nixbus/pkg/evaljobs"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/evaluator/internal/eval"
)

// jobStream publishes a run's jobs while the evaluation still runs: the
// evaluator hands each record to emit, and one goroutine takes whatever
// records have arrived (at least one, at most a cache-check batch), checks
// them, asks the cache about them in one go and publishes them through a
// bus.Window. Nothing waits for a batch to fill: when the evaluator is
// slow, a job goes out alone as soon as its record is in; when it is fast,
// records pile up behind the cache check and go out together.
//
// Memory stays bounded by the batch, the channel, the records held for a
// nix path-info and the window, not the job count: of each record only
// what the derivation graph's reduction needs is kept (the job's .drv
// path) and a hash of its name (to drop a repeat).
type jobStream struct {
	h      *handler
	run    string
	hdr    nats.Header
	logger *slog.Logger
	win    *bus.Window
	recs   chan eval.Record
	// systems are the systems built here.
	systems map[string]bool
	// store reads the jobs' derivations (and later their closure) once.
	store *drv.StoreGraph
	seen  attrSet
	// held are checked records waiting for a nix path-info (asksNix),
	// with heldPaths output paths.
	held      []eval.Record
	heldPaths int

	// Set by the consuming goroutine; read after it ended.
	drvs    []string // job derivations, in publishing order
	records int      // records received
	jobs    int      // jobs published
	dropped int
}

// newJobStream returns a stream publishing run's jobs through win.
func (h *handler) newJobStream(run string, hdr nats.Header, win *bus.Window, logger *slog.Logger) *jobStream {
	st := &jobStream{
		h: h, run: run, hdr: hdr, logger: logger, win: win,
		recs:    make(chan eval.Record, h.s.cfg.PathInfoBatch),
		systems: map[string]bool{}, store: drv.NewStoreGraph(), seen: newAttrSet(),
	}
	st.store.StoreDir = h.s.cfg.storeDir()
	for _, s := range h.s.cfg.Systems {
		st.systems[s] = true
	}
	return st
}

// emitter is the evaluator's Emit: it hands a record over, blocking while
// the stream is behind, and drops it once ctx ended (the evaluation is
// then stopping).
func (st *jobStream) emitter(ctx context.Context) func(eval.Record) {
	return func(r eval.Record) {
		select {
		case st.recs <- r:
		case <-ctx.Done():
		}
	}
}

// consume publishes the records handed over until the channel is closed.
// An error is the bus's (or ctx's): the caller stops the evaluation.
func (st *jobStream) consume(ctx context.Context) error {
	batch := make([]eval.Record, 0, cap(st.recs))
	for {
		r, ok := <-st.recs
		if !ok {
			return st.flushHeld(ctx)
		}
		batch = append(batch[:0], r)
		closed := false
	more:
		for len(batch) < cap(batch) {
			select {
			case r, ok := <-st.recs:
				if !ok {
					closed = true
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		if err := st.publishBatch(ctx, batch); err != nil {
			return err
		}
		clear(batch) // let the records go
		if closed {
			return st.flushHeld(ctx)
		}
	}
}

// publishBatch turns records into jobs and publishes them: one per
// attribute, jobs of other systems dropped, eval errors kept as failed
// jobs, each job marked cached or not. A job whose cache status only `nix
// path-info` can tell waits in held until its outputs and the held ones'
// fill PathInfoBatch paths (or the evaluation ends): one nix process per
// batch, not per handful of records.
func (st *jobStream) publishBatch(ctx context.Context, recs []eval.Record) error {
	st.records += len(recs)
	now := recs[:0]
	for _, r := range recs {
		// Names are unique (evaljobs.AttrName): a repeat is the same
		// attribute reported twice, never a second job.
		if !st.seen.add(r.Attr) {
			st.logger.Warn("attribute reported twice, keeping the first", "attr", r.Attr)
			continue
		}
		if r.Error == "" && !st.systems[r.System] {
			st.dropped++
			st.h.s.metrics.dropped.Inc()
			continue
		}
		// Everything the evaluation hands over is hostile: a job whose
		// derivation is not a readable .drv of the store fails alone.
		r = evaljobs.Check(r, st.store.StoreDir)
		if r.Error == "" {
			if _, err := st.store.Inputs(r.DrvPath); err != nil {
				r.Error = "read the derivation: " + err.Error()
				r.DrvPath, r.Outputs, r.CacheKnown, r.Cached = "", nil, false, false
			}
		}
		if st.h.asksNix(r) {
			// A batch is sent before it would overflow: one that held
			// more than PathInfoBatch paths would take a second nix
			// process for the few beyond.
			if st.heldPaths+len(r.Outputs) > st.h.s.cfg.PathInfoBatch {
				if err := st.flushHeld(ctx); err != nil {
					return err
				}
			}
			st.held = append(st.held, r)
			st.heldPaths += len(r.Outputs)
			continue
		}
		now = append(now, r)
	}
	if err := st.publishChecked(ctx, now); err != nil {
		return err
	}
	if st.heldPaths >= st.h.s.cfg.PathInfoBatch {
		return st.flushHeld(ctx)
	}
	return nil
}

// flushHeld publishes the jobs held for a nix path-info.
func (st *jobStream) flushHeld(ctx context.Context) error {
	if len(st.held) == 0 {
		return nil
	}
	err := st.publishChecked(ctx, st.held)
	clear(st.held)
	st.held, st.heldPaths = st.held[:0], 0
	return err
}

// publishChecked asks the cache about checked records and publishes them.
func (st *jobStream) publishChecked(ctx context.Context, recs []eval.Record) error {
	cached, err := st.h.cached(ctx, recs, st.logger)
	if err != nil {
		return err
	}
	for i, r := range recs {
		job := &nixbuspb.Job{
			RunId: st.run, Attr: r.Attr, AttrPath: evaljobs.ShownPath(r.AttrPath), DrvPath: r.DrvPath, System: r.System,
			Name: r.Name, Outputs: r.Outputs, Cached: cached[i],
		}
		if r.Error != "" {
			st.h.s.metrics.errors.Inc()
			job.EvalError = bus.Truncate(r.Error, maxErrorBytes)
			job.DrvPath, job.Outputs, job.Cached = "", nil, false
		}
		if err := st.publish(ctx, job); err != nil {
			return err
		}
		if job.DrvPath != "" {
			st.drvs = append(st.drvs, job.DrvPath)
		}
	}
	return nil
}

// publish starts publishing one job; it blocks only while the window is
// full.
func (st *jobStream) publish(ctx context.Context, job *nixbuspb.Job) error {
	msg, err := jobMsg(bus.RunSubject(st.run, bus.RunJobKind), st.run, job, st.hdr)
	if err != nil {
		return err
	}
	if err := st.win.Publish(ctx, msg); err != nil {
		return err
	}
	st.jobs++
	st.h.s.metrics.jobs.Inc()
	return nil
}

// attrSet remembers attribute names by a 128-bit hash under random seeds:
// 16 bytes per job however long its name, and names that collide (a
// chance of about n²/2¹²⁸) cannot be chosen by whoever wrote the flake.
type attrSet struct {
	seeds [2]maphash.Seed
	m     map[[2]uint64]struct{}
}

func newAttrSet() attrSet {
	return attrSet{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, m: map[[2]uint64]struct{}{}}
}

// add adds name and reports whether it was new.
func (s attrSet) add(name string) bool {
	k := [2]uint64{maphash.String(s.seeds[0], name), maphash.String(s.seeds[1], name)}
	if _, ok := s.m[k]; ok {
		return false
	}
	s.m[k] = struct{}{}
	return true
}

// runWindow runs a publishing window for one run until the returned stop
// is called.
func (h *handler) runWindow(ctx context.Context, run string) (*bus.Window, func()) {
	w := bus.NewWindow(h.s.js, bus.WindowOptions{
		Size: h.s.cfg.PublishWindow, AckTimeout: h.s.cfg.PublishAckTimeout,
		Logger: h.s.logger.With("run", run),
	})
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(wctx) })
	return w, func() { cancel(); wg.Wait() }
}
