package builder

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errRunCancelled is the cause given to the context of a build whose run
// was cancelled.
var errRunCancelled = errors.New("run cancelled")

// cancels tracks the builds running in this process by run, and the runs
// cancelled lately, so a cancellation reaches a build whichever comes first.
// It also remembers the runs whose cancellation was looked up on the stream
// and not found: from then on the subscription brings any cancellation of
// them, so their next builds need no lookup, as long as the subscription
// missed nothing (the same generation: no reconnect, no dropped message).
type cancels struct {
	mu      sync.Mutex
	running map[string]map[*context.CancelCauseFunc]struct{}
	seen    map[string]time.Time
	checked map[string]lookup
	keep    time.Duration
}

// lookup is a stream lookup that found no cancellation.
type lookup struct {
	gen uint64
	at  time.Time
}

func newCancels(keep time.Duration) *cancels {
	return &cancels{running: map[string]map[*context.CancelCauseFunc]struct{}{}, seen: map[string]time.Time{},
		checked: map[string]lookup{}, keep: keep}
}

// known reports whether run was looked up on the stream, and not found
// cancelled, in generation gen of the subscription, less than keep ago
// (a cancellation seen since is kept at least as long).
func (c *cancels) known(run string, gen uint64, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.checked[run]
	return ok && l.gen == gen && now.Sub(l.at) <= c.keep
}

// looked records that a lookup of run in generation gen found no
// cancellation.
func (c *cancels) looked(run string, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for r, l := range c.checked {
		if now.Sub(l.at) > c.keep {
			delete(c.checked, r)
		}
	}
	c.checked[run] = lookup{gen: gen, at: now}
}

// register makes cancel(run) stop the build with cancel. The returned
// function unregisters it. It reports whether run is already cancelled.
func (c *cancels) register(run string, cancel context.CancelCauseFunc) (unregister func(), cancelled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	builds := c.running[run]
	if builds == nil {
		builds = map[*context.CancelCauseFunc]struct{}{}
		c.running[run] = builds
	}
	key := &cancel
	builds[key] = struct{}{}
	_, cancelled = c.seen[run]
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(builds, key)
		if len(c.running[run]) == 0 {
			delete(c.running, run)
		}
	}, cancelled
}

// cancel stops every build of run and remembers it for a while.
func (c *cancels) cancel(run string, now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for r, at := range c.seen {
		if now.Sub(at) > c.keep {
			delete(c.seen, r)
		}
	}
	c.seen[run] = now
	for cancel := range c.running[run] {
		(*cancel)(errRunCancelled)
	}
	return len(c.running[run])
}
