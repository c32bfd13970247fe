package builder

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func liveChunks(t *testing.T, srv *natstest.Server, run, drv string) []*nixbuspb.LogChunk {
	t.Helper()
	_, js := srv.Connect(t)
	return natstest.Read[nixbuspb.LogChunk](t, js, bus.StreamLogs, bus.LogSubject(run, drv))
}

// liveLogHas reports whether drv's live log has streamed text so far (for
// a condition: false on any error).
func liveLogHas(ctx context.Context, js jetstream.JetStream, run, drv, text string) bool {
	chunks, err := natstest.TryRead[nixbuspb.LogChunk](ctx, js, bus.StreamLogs, bus.LogSubject(run, drv))
	return err == nil && strings.Contains(joined(chunks), text)
}

func joined(chunks []*nixbuspb.LogChunk) string {
	var b strings.Builder
	for _, c := range chunks {
		b.Write(c.GetData())
	}
	return b.String()
}

// A running build's log reaches the bus while it runs, in order, and ends
// with a final chunk; together the chunks are the stored log.
func TestLiveLogWhileBuilding(t *testing.T) {
	system := currentSystem(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	dir := markerDir(t)
	release := filepath.Join(dir, "release")
	drvs := derivations(t, map[string]string{
		"held": `echo first line; while [ ! -e ` + release + ` ]; do sleep 0.05; done; echo second line; echo done > $out`,
	})
	cfg := testConfig(t, system, "b1")
	cfg.LiveLogBytes = 1 << 20
	cfg.LiveLogInterval = 50 * time.Millisecond
	startBuilder(t, srv, cfg)
	run, drv := "rlive", drvs["held"]
	request(t, js, run, system, drv)

	require.Eventually(t, func() bool {
		return liveLogHas(t.Context(), js, run, drv, "first line")
	}, time.Minute, 20*time.Millisecond, "first line streamed while the build runs")
	require.Empty(t, results(t, js, run), "the build is still running")
	require.NotContains(t, joined(liveChunks(t, srv, run, drv)), "second line")
	require.NoError(t, os.WriteFile(release, nil, 0o644))

	res := waitResults(t, js, run, 1)[drv]
	require.Equal(t, nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, res.GetStatus(), res.GetError())
	chunks := liveChunks(t, srv, run, drv)
	last := chunks[len(chunks)-1]
	require.True(t, last.GetFinal())
	require.False(t, last.GetTruncated())
	var offset int64
	for i, c := range chunks {
		require.EqualValues(t, i, c.GetSeq())
		require.Equal(t, offset, c.GetOffset())
		require.Equal(t, "b1", c.GetBuilder())
		require.EqualValues(t, 1, c.GetDelivery())
		require.Equal(t, i == len(chunks)-1, c.GetFinal())
		offset += int64(len(c.GetData()))
	}
	require.Equal(t, readLog(t, js, res.GetLogKey()), joined(chunks))
}

// The live log is cut at LiveLogBytes and into chunks of at most
// MaxLogChunk; a flush published again (a retry) stores nothing twice.
func TestLiveLogCaps(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	f, err := os.CreateTemp(t.TempDir(), "log")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	data := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB
	_, err = f.Write(data)
	require.NoError(t, err)

	limit := int64(150 << 10)
	s := &Service{cfg: Config{Name: "b", LiveLogBytes: limit}, logger: slog.New(slog.DiscardHandler), pub: bus.NewPublisher(js, slog.New(slog.DiscardHandler))}
	h := &handler{s: s}
	req := &nixbuspb.BuildRequest{RunId: "rcap", DrvPath: "/nix/store/00000000000000000000000000000000-cap.drv"}
	for range 2 { // the second is a retry of the same attempt
		l := &liveLog{h: h, f: f, tmpl: &nixbuspb.LogChunk{RunId: req.RunId, DrvPath: req.DrvPath, Delivery: 1}}
		require.NoError(t, l.flush(t.Context(), false))
		require.True(t, l.finished, "the cap ends the live log")
		require.NoError(t, l.flush(t.Context(), true), "nothing after the final chunk")
	}
	chunks := liveChunks(t, srv, req.RunId, req.DrvPath)
	require.Len(t, chunks, 3)
	for _, c := range chunks {
		require.LessOrEqual(t, len(c.GetData()), bus.MaxLogChunk)
	}
	require.True(t, chunks[2].GetFinal())
	require.True(t, chunks[2].GetTruncated())
	require.Equal(t, string(data[:limit]), joined(chunks))
}
