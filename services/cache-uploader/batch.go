package cacheuploader

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// A batcher uploads the outputs of the builds that wait for it together:
// one sink upload (one `nix copy`, see nixSink) for many builds, not one
// each.
// It is a group commit: the first build to arrive starts a batch at once,
// and builds that arrive while it runs form the next one, so an idle
// uploader adds no delay and a busy one makes fewer, larger calls.
type batcher struct {
	sink     sink
	maxBuild int // builds per batch
	onBatch  func(builds int, took time.Duration, err error)

	mu      sync.Mutex
	queue   []*pending
	wake    chan struct{}
	stopped bool
}

// sink is where a batch of outputs goes: what `nix copy` writes itself, or
// an S3 bucket.
type sink interface {
	// upload puts the outputs and their closures in the cache.
	upload(ctx context.Context, outputs []string) error
}

type pending struct {
	paths []string
	// span is the waiting build's upload span: a batch's sign and copy
	// spans go under the first build's, so they stay in a run's trace.
	span trace.SpanContext
	err  error
	done chan struct{}
}

func newBatcher(s sink, maxBuilds int, onBatch func(int, time.Duration, error)) *batcher {
	return &batcher{sink: s, maxBuild: max(1, maxBuilds), onBatch: onBatch, wake: make(chan struct{}, 1)}
}

// upload queues one build's outputs and waits until a batch holding them
// has been uploaded, or ctx ends.
func (b *batcher) upload(ctx context.Context, paths []string) error {
	p := &pending{paths: paths, span: trace.SpanContextFromContext(ctx), done: make(chan struct{})}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return context.Canceled
	}
	b.queue = append(b.queue, p)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err() // the batch goes on; its result is dropped
	}
}

// run works through batches until ctx ends, then fails what still waits.
func (b *batcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			b.mu.Lock()
			b.stopped = true
			rest := b.queue
			b.queue = nil
			b.mu.Unlock()
			for _, p := range rest {
				p.err = ctx.Err()
				close(p.done)
			}
			return
		case <-b.wake:
		}
		for {
			b.mu.Lock()
			n := min(len(b.queue), b.maxBuild)
			batch := slices.Clone(b.queue[:n])
			b.queue = b.queue[n:]
			b.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			b.do(ctx, batch)
		}
	}
}

// do uploads one batch. When it fails, each build is tried on its own, so
// that one build whose outputs cannot be uploaded fails alone, with its
// own error.
func (b *batcher) do(ctx context.Context, batch []*pending) {
	var all []string
	for _, p := range batch {
		all = append(all, p.paths...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	t0 := time.Now()
	err := b.sink.upload(trace.ContextWithSpanContext(ctx, batch[0].span), all)
	if b.onBatch != nil {
		b.onBatch(len(batch), time.Since(t0), err)
	}
	if err != nil && len(batch) > 1 && ctx.Err() == nil {
		for _, p := range batch {
			p.err = b.sink.upload(trace.ContextWithSpanContext(ctx, p.span), p.paths)
			close(p.done)
		}
		return
	}
	for _, p := range batch {
		p.err = err
		close(p.done)
	}
}

// knownSet remembers store paths known to be in the cache (uploaded by
// this process, or found there), so they are neither copied nor asked
// about again. It forgets the oldest beyond its capacity.
type knownSet struct {
	mu    sync.Mutex
	set   map[string]struct{}
	order []string
	next  int
}

func newKnownSet(capacity int) *knownSet {
	return &knownSet{set: make(map[string]struct{}), order: make([]string, 0, max(1, capacity))}
}

func (k *knownSet) has(p string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.set[p]
	return ok
}

func (k *knownSet) add(paths ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range paths {
		if _, ok := k.set[p]; ok {
			continue
		}
		if len(k.order) < cap(k.order) {
			k.order = append(k.order, p)
		} else {
			delete(k.set, k.order[k.next])
			k.order[k.next] = p
			k.next = (k.next + 1) % len(k.order)
		}
		k.set[p] = struct{}{}
	}
}

// missing is the paths not known, in their order.
func (k *knownSet) missing(paths []string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, p := range paths {
		if _, ok := k.set[p]; !ok {
			out = append(out, p)
		}
	}
	return out
}
