package cacheuploader

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// recordingSink records each batch it is given; its first batch waits
// until release is closed, and any batch holding "bad" fails.
type recordingSink struct {
	mu      sync.Mutex
	batches [][]string
	first   sync.Once
	started chan struct{}
	release chan struct{}
}

func (r *recordingSink) upload(ctx context.Context, outputs []string) error {
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(outputs))
	r.mu.Unlock()
	r.first.Do(func() {
		close(r.started)
		<-r.release
	})
	if slices.Contains(outputs, "bad") {
		return errors.New("bad output")
	}
	return nil
}

func TestBatcherGroupsWaitingBuilds(t *testing.T) {
	sink := &recordingSink{started: make(chan struct{}), release: make(chan struct{})}
	var sizes []int
	b := newBatcher(sink, 3, func(n int, _ time.Duration, _ error) { sizes = append(sizes, n) })
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		b.run(ctx)
	}()
	defer func() {
		cancel()
		<-stopped
	}()

	errs := make(chan error, 8)
	upload := func(paths ...string) { go func() { errs <- b.upload(t.Context(), paths) }() }
	upload("a")
	<-sink.started // the first build is uploading on its own
	// Four more wait meanwhile: one with an output that cannot be uploaded.
	upload("b1", "b2")
	upload("c")
	upload("bad")
	upload("d", "b1")
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 4
	}, 10*time.Second, time.Millisecond)
	close(sink.release)

	var failed int
	for range 5 {
		if err := <-errs; err != nil {
			require.EqualError(t, err, "bad output")
			failed++
		}
	}
	require.Equal(t, 1, failed, "only the build whose output fails fails")
	sink.mu.Lock()
	defer sink.mu.Unlock()
	require.Equal(t, []string{"a"}, sink.batches[0])
	// At most three builds per batch: the next batch has three, one of
	// which fails, so its builds are tried one by one; the last build
	// gets a batch of its own.
	require.Len(t, sink.batches[1], 4, "three builds' outputs together, sorted and without repeats: %v", sink.batches[1])
	require.Equal(t, []int{1, 3, 1}, sizes)
}

func TestBatcherStops(t *testing.T) {
	sink := &recordingSink{started: make(chan struct{}), release: make(chan struct{})}
	close(sink.release)
	b := newBatcher(sink, 8, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b.run(ctx)
	require.ErrorIs(t, b.upload(t.Context(), []string{"x"}), context.Canceled)
}

func TestKnownSetForgetsTheOldest(t *testing.T) {
	k := newKnownSet(3)
	k.add("a", "b", "c", "a")
	require.Empty(t, k.missing([]string{"a", "b", "c"}))
	k.add("d")
	require.Equal(t, []string{"a"}, k.missing([]string{"a", "b", "c", "d"}))
	k.add("e", "f")
	require.Equal(t, []string{"a", "b", "c"}, k.missing([]string{"a", "b", "c", "d", "e", "f"}))
	require.True(t, k.has("f"))
}

func TestWithSecretKey(t *testing.T) {
	for _, tc := range []struct {
		url, key, want string
		signs          bool
	}{
		{"file:///var/cache", "/run/key", "file:///var/cache?secret-key=%2Frun%2Fkey", true},
		{"file:///c?compression=zstd", "/k", "file:///c?compression=zstd&secret-key=%2Fk", true},
		// Nix percent-decodes the value: no character of the path may
		// end it or change it.
		{"file:///c", "/a b%c/k&e+y=?#", "file:///c?secret-key=%2Fa%20b%25c%2Fk%26e%2By%3D%3F%23", true},
		{"file:///c?secret-key=/other", "/k", "file:///c?secret-key=/other", false},
	} {
		got, signs := withSecretKey(tc.url, tc.key)
		require.Equal(t, tc.want, got, tc.url)
		require.Equal(t, tc.signs, signs, tc.url)
	}
}
