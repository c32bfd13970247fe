package planner

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPlannerStarted: the planner says it has started (/readyz) once it
// reads the runs stream and hears builders, and no longer once Run ended.
func TestPlannerStarted(t *testing.T) {
	e := newEnv(t)
	_, js := e.srv.Connect(t)
	p, err := New(testConfig(), Deps{JS: js, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.False(t, p.Started())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	require.Eventually(t, p.Started, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.False(t, p.Started())
}
