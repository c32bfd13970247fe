package planner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// The failed-build cache (Hydra's and buildbot-nix's cacheFailedBuilds): a
// derivation whose build failed by its own fault (non-zero exit, time
// limit, silence) is remembered for --planner.failed-cache-ttl, and a later
// run's job on it fails at once, linking the first failure's log, instead of
// being built again. What was not the build's fault is not remembered: no
// builder for the system, the run deadline, a cancelled run, an
// infrastructure failure that outlasted the builder's retries.
//
// The cache is a KV bucket the planner owns (FailedBucket, created with
// the planner's other bucket), one key per derivation with a per-key TTL. The planner keeps a copy in memory, fed by a watch, so that
// planning a run looks nothing up on the bus. A restarted job is built
// whatever the cache says, and any success of a derivation clears its entry.

// FailedBucket is the planner's failed-build cache: FailedBuild values
// keyed by failedKey.
const FailedBucket = "nixbus-failed-builds"

// failedBucket is how FailedBucket is created: its keys expire one by one,
// and the planner watches it.
var failedBucket = bus.Bucket{Name: FailedBucket, Description: "the planner's failed-build cache: derivations whose build failed by its own fault",
	KeyTTL: true, Watched: true}

// maxFailedErrorBytes bounds the error a cache entry keeps.
const maxFailedErrorBytes = 1 << 10

// failedKey is drv's key in FailedBucket: a hash, as a path may hold
// characters a KV key cannot.
func failedKey(drv string) string {
	h := sha256.Sum256([]byte(drv))
	return hex.EncodeToString(h[:])
}

// failCache is the planner's copy of FailedBucket, owned by the planner's
// loop. A nil *failCache is a disabled cache.
type failCache struct {
	kv      jetstream.KeyValue
	ttl     time.Duration
	logger  *slog.Logger
	watch   jetstream.KeyWatcher
	entries map[string]failedEntry // by failedKey
}

type failedEntry struct {
	rev uint64
	fb  *nixbuspb.FailedBuild // nil: deleted at rev
}

// openFailCache loads FailedBucket (bus.EnsureStreams created it); ttl 0
// disables the cache.
func openFailCache(ctx context.Context, js jetstream.JetStream, ttl time.Duration, logger *slog.Logger) (*failCache, error) {
	if ttl <= 0 {
		return nil, nil
	}
	kv, err := js.KeyValue(ctx, FailedBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", FailedBucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", FailedBucket, err)
	}
	c := &failCache{kv: kv, ttl: ttl, logger: logger, watch: w, entries: map[string]failedEntry{}}
	// Every entry there is, before the first run is planned.
	for {
		select {
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				return c, nil
			}
			c.update(e)
		}
	}
}

// updates are the bucket's changes after the initial load (nil channel
// when disabled).
func (c *failCache) updates() <-chan jetstream.KeyValueEntry {
	if c == nil {
		return nil
	}
	return c.watch.Updates()
}

func (c *failCache) stop() {
	if c == nil {
		return
	}
	if err := c.watch.Stop(); err != nil {
		c.logger.Debug("stop watching the failed-build cache", "err", err)
	}
}

// update applies one change of the bucket, unless the copy is newer.
func (c *failCache) update(e jetstream.KeyValueEntry) {
	if e == nil {
		return
	}
	if old, ok := c.entries[e.Key()]; ok && old.rev > e.Revision() {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		c.entries[e.Key()] = failedEntry{rev: e.Revision()}
		return
	}
	var fb nixbuspb.FailedBuild
	if err := bus.Decode(e.Value(), &fb); err != nil || failedKey(fb.GetDrvPath()) != e.Key() {
		c.logger.Warn("ignore malformed failed-build cache entry", "key", e.Key(), "err", err)
		return
	}
	c.entries[e.Key()] = failedEntry{rev: e.Revision(), fb: &fb}
}

// lookup returns drv's failure, if it failed within the TTL.
func (c *failCache) lookup(drv string, now time.Time) *nixbuspb.FailedBuild {
	if c == nil {
		return nil
	}
	fb := c.entries[failedKey(drv)].fb
	if fb == nil || fb.GetDrvPath() != drv || now.Sub(time.UnixMilli(fb.GetFailedUnixMs())) >= c.ttl {
		return nil
	}
	return fb
}

// record remembers res, a failed build, unless it was not the build's
// fault or drv's first failure is still remembered. A cache that cannot be
// written is logged, never a reason to stop planning.
func (c *failCache) record(ctx context.Context, res *nixbuspb.BuildResult, now time.Time) {
	if c == nil || !ownFailure(res) {
		return
	}
	drv, key := res.GetDrvPath(), failedKey(res.GetDrvPath())
	if c.lookup(drv, now) != nil {
		return
	}
	fb := &nixbuspb.FailedBuild{
		DrvPath: drv, RunId: res.GetRunId(), LogKey: res.GetLogKey(), Error: bus.Truncate(res.GetError(), maxFailedErrorBytes),
		Status: res.GetStatus(), FailedUnixMs: now.UnixMilli(), DurationMs: res.GetDurationMs(),
	}
	data, err := proto.Marshal(fb)
	if err != nil {
		c.logger.Error("encode failed-build cache entry", "drv", drv, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if old, ok := c.entries[key]; ok && old.fb != nil {
		// Older than the TTL (a shorter one than it was written with):
		// the new failure replaces it.
		if err := c.kv.Delete(ctx, key, jetstream.LastRevision(old.rev)); err != nil {
			c.logger.Warn("replace failed-build cache entry", "drv", drv, "err", err)
			return
		}
	}
	rev, err := c.kv.Create(ctx, key, data, jetstream.KeyTTL(c.ttl))
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return // recorded by a replay of this run, or by another planner
	case err != nil:
		c.logger.Warn("record failed build", "drv", drv, "err", err)
		return
	}
	c.entries[key] = failedEntry{rev: rev, fb: fb}
}

// clear forgets drv's failure: it was built at time at. A failure
// recorded after that stays (a replay reads old successes again).
func (c *failCache) clear(ctx context.Context, drv string, at time.Time) {
	if c == nil {
		return
	}
	key := failedKey(drv)
	if fb := c.entries[key].fb; fb == nil || fb.GetFailedUnixMs() > at.UnixMilli() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.kv.Delete(ctx, key); err != nil {
		c.logger.Warn("clear failed-build cache entry", "drv", drv, "err", err)
		return
	}
	c.entries[key] = failedEntry{rev: c.entries[key].rev}
}

// ownFailure reports whether res is a build's own failure: a non-zero exit,
// the time limit or silence, and not an infrastructure failure.
func ownFailure(res *nixbuspb.BuildResult) bool {
	switch res.GetStatus() {
	case nixbuspb.BuildStatus_BUILD_STATUS_FAILED, nixbuspb.BuildStatus_BUILD_STATUS_TIMED_OUT:
		return res.GetTransient() == ""
	}
	return false
}

// cachedFailureReason is the outcome reason of a job that failed before.
func cachedFailureReason(fb *nixbuspb.FailedBuild) string {
	reason := "failed in an earlier build (cached failure)"
	if fb.GetError() != "" {
		reason += ": " + fb.GetError()
	}
	return reason
}

// markFailedBefore gives each job of r whose derivation failed in an
// earlier build its reason to fail without building. A failure recorded by
// r itself (read again on a replay) does not count: r built it. plannedAt
// is, for a run restored (restart.go), when it was planned: the cache is
// read as it was then, and a failure recorded since does not count either
// (zero: now, for a run being planned).
func (st *runMachine) markFailedBefore(r *run, plannedAt time.Time) {
	if st.fails == nil || len(st.fails.entries) == 0 {
		return // no hashing of every job's path for nothing
	}
	now := plannedAt
	if now.IsZero() {
		now = st.s.now()
	}
	for i := range r.jobs {
		j := &r.jobs[i]
		if j.Drv == "" || j.EvalError != "" {
			continue
		}
		fb := st.fails.lookup(j.Drv, now)
		if fb == nil || fb.GetRunId() == r.id || !plannedAt.IsZero() && fb.GetFailedUnixMs() > plannedAt.UnixMilli() {
			continue
		}
		j.FailedBefore = cachedFailureReason(fb)
		if r.failedBefore == nil {
			r.failedBefore = map[string]*nixbuspb.FailedBuild{}
		}
		r.failedBefore[j.Drv] = fb
	}
}

// remember keeps what a build result applied to a run says about its
// derivation: a success clears a cached failure (a restart's rebuild, or a
// run planned before the failure), a failure of its own is recorded if
// none is. Results read again to restore a run (restart.go) do not come
// here.
func (st *runMachine) remember(ctx context.Context, m *nixbuspb.BuildResult, at time.Time) {
	if m.GetStatus() == nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED {
		st.fails.clear(ctx, m.GetDrvPath(), at)
		return
	}
	st.fails.record(ctx, m, at)
}
