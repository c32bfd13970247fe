package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/services/planner"
)

type serviceFunc func(ctx context.Context) error

func (f serviceFunc) Run(ctx context.Context) error { return f(ctx) }

// Whatever a service returns once its context has ended is a clean stop:
// a SIGTERM during start-up must not exit 1.
func TestRunServiceContextEndedIsNil(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		cancel  bool
		ret     func(ctx context.Context) error
		wantErr error
	}{
		{"ended during start-up, wrapped ctx error", true, func(ctx context.Context) error {
			return fmt.Errorf("ensure consumer: %w", ctx.Err())
		}, nil},
		{"ended during start-up, unrelated error", true, func(context.Context) error {
			return errors.New("nats: connection closed")
		}, nil},
		{"ended, nil", true, func(context.Context) error { return nil }, nil},
		{"real failure", false, func(context.Context) error { return boom }, boom},
		{"clean return", false, func(context.Context) error { return nil }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			err := runService(ctx, "svc", serviceFunc(func(ctx context.Context) error {
				if tc.cancel {
					cancel()
				}
				return tc.ret(ctx)
			}))
			if tc.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.wantErr)
			require.ErrorContains(t, err, "svc: ")
		})
	}
}

// Every service of the real wiring, stopped while it starts, returns
// cleanly through Wait.
func TestInstanceStoppedDuringStartUp(t *testing.T) {
	for _, svc := range []string{"builder", "evaluator", "gerrit-ingest", "planner", "reporter", "cache-uploader"} {
		t.Run(svc, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			inst, err := startArgs(ctx, t, "--state-dir", t.TempDir(), "--service", svc)
			require.NoError(t, err)
			cancel()
			require.NoError(t, inst.Wait())
		})
	}
}

// /metrics and /logs/ listen on loopback unless an address is given.
func TestServeHTTPIsLoopbackByDefault(t *testing.T) {
	fs, o, _ := serveFlags(io.Discard)
	require.NoError(t, fs.Parse(nil))
	host, _, err := net.SplitHostPort(o.HTTPAddress)
	require.NoError(t, err)
	require.True(t, net.ParseIP(host).IsLoopback(), "default %q", o.HTTPAddress)

	fs, o, _ = serveFlags(io.Discard)
	require.NoError(t, fs.Parse([]string{"--http.address", ":9999"}))
	require.Equal(t, ":9999", o.HTTPAddress, "an address given is used as is")
}

// TestDuplicateWindowCoversTheRunDeadline: a planner restart replays no
// further back than the run deadline, and JetStream drops what it
// publishes again only within the duplicate window; by default the one
// covers the other, so a replay publishes nothing twice even for a run
// that is still unfinished.
func TestDuplicateWindowCoversTheRunDeadline(t *testing.T) {
	require.GreaterOrEqual(t, bus.DefaultStreamOptions().DuplicateWindow, planner.DefaultConfig().RunTimeout)
}
