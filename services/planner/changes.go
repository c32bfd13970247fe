package planner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/retry"
)

// The newest run of each Gerrit change is kept in the planner's KV bucket,
// not only in memory: a run of an older patchset that starts after the
// newer one finished (a late event, a "recheck" on an old patchset, a
// planner restart in between) must still be cancelled, never voted on.
// Memory holds only changes with an unfinished run.

// changeRun is the run of a change that started last. Runs are ordered by
// patchset, then by stream sequence: of two runs of one patchset (a
// recheck) the later one counts.
type changeRun struct {
	patchset int32
	seq      uint64
	run      string
}

func (a changeRun) newerThan(b changeRun) bool {
	return a.patchset > b.patchset || a.patchset == b.patchset && a.seq > b.seq
}

// changeKVKey names a change in KV; project names may hold characters KV
// keys cannot, so the project is hashed.
func changeKVKey(k changeKey) string {
	h := sha256.Sum256([]byte(k.project))
	return "change." + hex.EncodeToString(h[:8]) + "." + strconv.FormatInt(k.change, 10)
}

func (c changeRun) encode() []byte {
	return fmt.Appendf(nil, "%d %d %s", c.patchset, c.seq, c.run)
}

func decodeChangeRun(b []byte) (changeRun, error) {
	f := strings.SplitN(string(b), " ", 3)
	if len(f) != 3 {
		return changeRun{}, fmt.Errorf("malformed entry %q", b)
	}
	ps, err := strconv.ParseInt(f[0], 10, 32)
	if err != nil {
		return changeRun{}, fmt.Errorf("malformed patchset in %q: %w", b, err)
	}
	seq, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return changeRun{}, fmt.Errorf("malformed sequence in %q: %w", b, err)
	}
	return changeRun{patchset: int32(ps), seq: seq, run: f[2]}, nil
}

// latest is the newest run of change k, from memory or KV; ok is false
// when there is none. It retries KV until it answers or ctx ends.
func (st *runMachine) latest(ctx context.Context, k changeKey) (c changeRun, ok bool, err error) {
	if c, ok := st.changes[k]; ok {
		return c, true, nil
	}
	err = untilDone(ctx, st.s.logger, "read newest run of change", func() error {
		e, err := st.out.kv.Get(ctx, changeKVKey(k))
		switch {
		case bus.IsNotFound(err):
			return nil
		case err != nil:
			return err
		}
		if c, err = decodeChangeRun(e.Value()); err != nil {
			st.s.logger.Error("ignore newest run of change", "project", k.project, "change", k.change, "err", err)
			return nil
		}
		ok = true
		return nil
	})
	return c, ok, err
}

// setLatest records c as the newest run of change k.
func (st *runMachine) setLatest(ctx context.Context, k changeKey, c changeRun) error {
	st.changes[k] = c
	return untilDone(ctx, st.s.logger, "save newest run of change", func() error {
		_, err := st.out.kv.Put(ctx, changeKVKey(k), c.encode())
		return err
	})
}

// forget drops change k from memory once its newest run r finished.
func (st *runMachine) forget(r *run) {
	k := changeKey{r.change.GetProject(), r.change.GetChange()}
	if c, ok := st.changes[k]; ok && c.run == r.id {
		delete(st.changes, k)
	}
}

// untilDone calls f until it succeeds, backing off, or ctx ends.
func untilDone(ctx context.Context, logger *slog.Logger, what string, f func() error) error {
	backoff := retry.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		logger.Warn(what, "attempt", attempt, "err", err)
		if err := backoff.Wait(ctx); err != nil {
			return err
		}
	}
}
