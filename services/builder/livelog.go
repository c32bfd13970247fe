package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// liveLog streams a build's log file to the bus while nix writes it: every
// LiveLogInterval it publishes what was added since, in chunks of at most
// bus.MaxLogChunk bytes, until the build ends or LiveLogBytes went out.
// Each chunk has a message id of its own, so a publish retried after an
// outage is stored once; a redelivered request is another attempt, whose
// chunks have ids of their own.
type liveLog struct {
	h        *handler
	f        *os.File
	tmpl     *nixbuspb.LogChunk // run, drv, attempt, builder
	seq      int64
	offset   int64
	finished bool // the final chunk went out, or streaming gave up
	stop     chan struct{}
	wg       sync.WaitGroup
}

// startLive starts streaming f; finish stops it. With live logs off it
// returns nil, on which finish does nothing.
func (h *handler) startLive(ctx context.Context, req *nixbuspb.BuildRequest, delivery uint64, f *os.File) *liveLog {
	if h.s.cfg.LiveLogBytes == 0 || f == nil {
		return nil
	}
	l := &liveLog{h: h, f: f, stop: make(chan struct{}), tmpl: &nixbuspb.LogChunk{
		RunId: req.GetRunId(), DrvPath: req.GetDrvPath(), RestartSeq: req.GetRestartSeq(), Delivery: delivery, Builder: h.s.cfg.Name,
	}}
	l.wg.Go(func() {
		t := time.NewTicker(h.s.cfg.LiveLogInterval)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := l.flush(ctx, false); err != nil && ctx.Err() == nil {
				h.s.logger.Warn("stream live log", "run", req.GetRunId(), "drv", req.GetDrvPath(), "err", err)
			}
		}
	})
	return l
}

// finish publishes the rest of the log and the final chunk.
func (l *liveLog) finish(ctx context.Context) {
	if l == nil {
		return
	}
	close(l.stop)
	l.wg.Wait()
	if err := l.flush(ctx, true); err != nil && ctx.Err() == nil {
		l.h.s.logger.Warn("finish live log", "run", l.tmpl.GetRunId(), "drv", l.tmpl.GetDrvPath(), "err", err)
	}
}

// flush publishes what the file gained since the last chunk. With last,
// it ends the attempt with a final chunk (possibly empty).
func (l *liveLog) flush(ctx context.Context, last bool) error {
	if l.finished {
		return nil
	}
	limit := l.h.s.cfg.LiveLogBytes
	buf := make([]byte, bus.MaxLogChunk)
	for {
		room := min(int64(len(buf)), limit-l.offset)
		n := 0
		if room > 0 {
			var err error
			n, err = l.f.ReadAt(buf[:room], l.offset)
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read log: %w", err)
			}
		}
		capped := l.offset+int64(n) >= limit
		if n == 0 && !last && !capped {
			return nil
		}
		final := last && n < int(room) || capped
		if err := l.publish(ctx, buf[:n], final, capped); err != nil {
			return err
		}
		if final {
			return nil
		}
		if n < int(room) {
			return nil // caught up
		}
	}
}

// liveLogPublishTimeout bounds one chunk's publish: a live log is a
// convenience, and a bus outage must never hold up the build's result (the
// whole log goes to the object store with it).
const liveLogPublishTimeout = 5 * time.Second

func (l *liveLog) publish(ctx context.Context, data []byte, final, truncated bool) error {
	c := &nixbuspb.LogChunk{
		RunId: l.tmpl.GetRunId(), DrvPath: l.tmpl.GetDrvPath(), RestartSeq: l.tmpl.GetRestartSeq(), Delivery: l.tmpl.GetDelivery(),
		Builder: l.tmpl.GetBuilder(), Seq: l.seq, Offset: l.offset, Data: data, Final: final, Truncated: truncated,
	}
	id := bus.MsgIDLogChunk(c.GetRunId(), c.GetDrvPath(), c.GetRestartSeq(), c.GetDelivery(), c.GetSeq())
	pctx, cancel := context.WithTimeout(ctx, liveLogPublishTimeout)
	defer cancel()
	if err := l.h.s.pub.Publish(pctx, bus.LogSubject(c.GetRunId(), c.GetDrvPath()), id, c, nil); err != nil {
		l.finished = true // give up streaming this attempt; readers fall back to the stored log
		return fmt.Errorf("publish live log chunk %d (streaming stopped): %w", c.GetSeq(), err)
	}
	l.seq++
	l.offset += int64(len(data))
	l.finished = final
	return nil
}
