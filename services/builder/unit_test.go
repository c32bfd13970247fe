package builder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
)

func TestStoreLogKeepsHeadAndTail(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	logs, err := js.ObjectStore(t.Context(), bus.LogBucket)
	require.NoError(t, err)
	h := &handler{s: &Service{cfg: Config{MaxLogBytes: 2000}}, logs: logs}

	tests := []struct {
		name    string
		content string
		want    func(t *testing.T, got string)
	}{
		{"small", "all of it\n", func(t *testing.T, got string) { require.Equal(t, "all of it\n", got) }},
		{"large", "HEAD" + strings.Repeat("x", 5000) + "TAIL", func(t *testing.T, got string) {
			require.True(t, strings.HasPrefix(got, "HEAD"))
			require.True(t, strings.HasSuffix(got, "TAIL"))
			require.Contains(t, got, "[nixbus: 3008 bytes of log left out]")
			require.Less(t, len(got), 2100)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "log"))
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, f.Close()) })
			_, err = f.WriteString(tt.content)
			require.NoError(t, err)
			key, err := h.storeLog(t.Context(), "r1/"+tt.name, f)
			require.NoError(t, err)
			tt.want(t, readLog(t, js, key))
		})
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	old, fresh := filepath.Join(dir, "rold"), filepath.Join(dir, "rfresh")
	for _, d := range []string{old, fresh} {
		require.NoError(t, os.MkdirAll(d, 0o755))
		require.NoError(t, os.Symlink("/nix/store/x", filepath.Join(d, "link")))
	}
	now := time.Now()
	require.NoError(t, os.Chtimes(old, now.Add(-48*time.Hour), now.Add(-48*time.Hour)))
	require.NoError(t, prune(dir, now.Add(-24*time.Hour)))
	require.NoDirExists(t, old)
	require.DirExists(t, fresh)
}

func TestCancels(t *testing.T) {
	c := newCancels(time.Minute)
	now := time.Now()
	ctx1, cancel1 := context.WithCancelCause(t.Context())
	defer cancel1(nil)
	unregister1, cancelled := c.register("r1", cancel1)
	require.False(t, cancelled)
	ctx2, cancel2 := context.WithCancelCause(t.Context())
	defer cancel2(nil)
	unregister2, _ := c.register("r2", cancel2)

	require.Equal(t, 1, c.cancel("r1", now))
	require.ErrorIs(t, context.Cause(ctx1), errRunCancelled)
	require.NoError(t, ctx2.Err())
	unregister1()
	unregister2()
	require.Empty(t, c.running)

	// A build registering after the cancellation learns of it.
	_, cancel3 := context.WithCancelCause(t.Context())
	defer cancel3(nil)
	_, cancelled = c.register("r1", cancel3)
	require.True(t, cancelled)
	// Old cancellations are forgotten.
	c.cancel("r9", now.Add(2*time.Minute))
	_, cancelled = c.register("r1", cancel3)
	require.False(t, cancelled)

	// A lookup that found no cancellation holds in its generation of the
	// subscription, and no longer than a cancellation is kept.
	c.looked("r5", 7, now)
	require.True(t, c.known("r5", 7, now.Add(time.Minute)))
	require.False(t, c.known("r5", 8, now), "after a reconnect or a dropped message")
	require.False(t, c.known("r5", 7, now.Add(time.Minute+time.Second)))
	require.False(t, c.known("r6", 7, now))
}
