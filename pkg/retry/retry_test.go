package retry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name string
		b    Backoff
		want []time.Duration
	}{
		{"doubles up to max", Backoff{Min: time.Second, Max: 5 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}},
		{"zero value", Backoff{},
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}},
		{"max below min is min", Backoff{Min: time.Second, Max: time.Millisecond},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []time.Duration
			for range tc.want {
				got = append(got, tc.b.Next())
			}
			require.Equal(t, tc.want, got)
			tc.b.Reset()
			require.Equal(t, tc.want[0], tc.b.Next(), "reset starts over")
		})
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b := Backoff{Min: time.Hour, Max: time.Hour}
	require.ErrorIs(t, b.Wait(ctx), context.Canceled)
	require.NoError(t, Sleep(t.Context(), time.Nanosecond))
}

func TestPermanent(t *testing.T) {
	base := errors.New("refused")
	require.NoError(t, Permanent(nil))
	require.False(t, IsPermanent(base))
	p := Permanent(base)
	require.True(t, IsPermanent(p))
	require.True(t, IsPermanent(fmt.Errorf("post review: %w", p)), "wrapped")
	require.ErrorIs(t, p, base)
	require.Equal(t, "refused", p.Error())
}
