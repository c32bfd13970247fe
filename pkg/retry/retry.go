// Package retry is nixbus's one way to wait between attempts: a doubling
// backoff that a context can cut short, and the mark of an error no retry
// can fix.
package retry

import (
	"context"
	"errors"
	"time"
)

// Backoff doubles a delay from Min up to Max. The zero value waits 100 ms
// doubling to 5 s.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

func (b *Backoff) bounds() (lo, hi time.Duration) {
	lo, hi = b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi < lo {
		hi = max(lo, 5*time.Second)
	}
	return lo, hi
}

// Next returns the delay to wait now and doubles the following one.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.bounds()
	if b.cur < lo {
		b.cur = lo
	}
	d := b.cur
	b.cur = min(b.cur*2, hi)
	return d
}

// Reset starts over at Min, after an attempt that worked.
func (b *Backoff) Reset() { b.cur = 0 }

// Wait sleeps for Next() or until ctx ends, whichever is first, and
// returns ctx.Err() in the second case.
func (b *Backoff) Wait(ctx context.Context) error {
	return Sleep(ctx, b.Next())
}

// Sleep waits d or until ctx ends; it returns ctx.Err() if ctx ended first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as one no retry can fix (a malformed message, a
// request the other side refused for good). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
