package gerritingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/gerrit"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func fastConfig() Config {
	return Config{ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}
}

// start runs a gerrit-ingest until the test ends; its log goes to logs.
func start(t *testing.T, js jetstream.JetStream, cfg Config, ssh gerrit.SSHConfig, logs *syncBuffer) *Service {
	t.Helper()
	s, err := New(cfg, Deps{JS: js, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), SSH: ssh})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return s
}

// published returns the change events in the stream, in order.
func published(t *testing.T, js jetstream.JetStream) []*nixbuspb.ChangeEvent {
	t.Helper()
	st, err := js.Stream(t.Context(), bus.StreamChanges)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // the service has not started yet
	}
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	var out []*nixbuspb.ChangeEvent
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		require.NoError(t, err)
		var ev nixbuspb.ChangeEvent
		require.NoError(t, bus.Decode(m.Data, &ev))
		require.Equal(t, bus.ChangeSubject(ev.Project), m.Subject)
		require.Equal(t, bus.MsgIDChange(ev.EventId), m.Header.Get(jetstream.MsgIDHeader))
		out = append(out, &ev)
	}
	return out
}

// publishedCount is how many change events the stream holds, for a
// condition (which must not fail the test): 0 until it can be read.
func publishedCount(ctx context.Context, js jetstream.JetStream) int {
	st, err := js.Stream(ctx, bus.StreamChanges)
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return int(info.State.Msgs)
}

// read is how many stream lines the service has dealt with.
func read(s *Service) int {
	n := testutil.ToFloat64(s.metrics.malformed)
	for _, typ := range []string{"patchset-created", "change-restored", "comment-added", "change-merged", "ref-updated", "dropped-output", "other"} {
		n += testutil.ToFloat64(s.metrics.events.WithLabelValues(typ))
	}
	return int(n)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 20*time.Second, 10*time.Millisecond, what)
}

func keys(evs []*nixbuspb.ChangeEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		switch {
		case e.Change > 0:
			out[i] = fmt.Sprintf("%s %d/%d %s", strings.TrimPrefix(e.Kind.String(), "KIND_"), e.Change, e.Patchset, e.Ref)
		default:
			out[i] = fmt.Sprintf("%s %s %s", strings.TrimPrefix(e.Kind.String(), "KIND_"), e.Ref, e.Revision[:8])
		}
	}
	return out
}

func TestPublishesEachEventOnce(t *testing.T) {
	srv := gerrittest.Start(t, gerrittest.Options{})
	_, js := natstest.Start(t).Connect(t)
	logs := &syncBuffer{}
	cfg := fastConfig()
	cfg.Projects = []string{"nixbus", "nix/pkgs"}
	s := start(t, js, cfg, srv.SSHConfig(), logs)

	stringy := gerrittest.PatchsetCreated("nix/pkgs", 77, 1)
	stringy.StringNumbers = true
	object := gerrittest.PatchsetCreated("nixbus", 1235, 1)
	object.ProjectObject = true
	noCode := gerrittest.PatchsetCreated("nixbus", 1234, 3)
	noCode.Kind = "NO_CODE_CHANGE"
	tip := gerrittest.Rev("tip")
	srv.Push(
		gerrittest.PatchsetCreated("nixbus", 1234, 2),
		stringy,
		object,
		noCode,
		gerrittest.CommentAdded("nixbus", 1234, 2, "looks good"),
		gerrittest.CommentAdded("nixbus", 1234, 2, "recheck"),
		gerrittest.PatchsetCreated("elsewhere", 1, 1),
		gerrittest.RefUpdated("nixbus", "refs/changes/34/1234/meta", gerrittest.Rev("a"), gerrittest.Rev("b")),
		gerrittest.ChangeMerged("nixbus", "main", 1234, 2, tip),
		gerrittest.RefUpdated("nixbus", "refs/heads/main", gerrittest.Rev("old"), tip),
		gerrittest.ChangeRestored("nixbus", 1235, 1),
		gerrittest.DroppedOutput(),
	)
	srv.PushRaw(`{"type":"patchset-created","change":`, `not json at all`)
	// The same patchset again, as a second Gerrit event for it would be.
	srv.Push(gerrittest.PatchsetCreated("nixbus", 1234, 2))
	eventually(t, "all lines read", func() bool { return read(s) == 15 })

	got := published(t, js)
	require.Equal(t, []string{
		"PATCHSET_CREATED 1234/2 refs/changes/34/1234/2",
		"PATCHSET_CREATED 77/1 refs/changes/77/77/1",
		"PATCHSET_CREATED 1235/1 refs/changes/35/1235/1",
		"RECHECK 1234/2 refs/changes/34/1234/2",
		"CHANGE_MERGED refs/heads/main " + tip[:8],
		"CHANGE_RESTORED 1235/1 refs/changes/35/1235/1",
	}, keys(got))
	first := got[0]
	require.Equal(t, "nixbus", first.Project)
	require.Equal(t, srv.RepoURL("nixbus"), first.RepoUrl)
	require.Equal(t, gerrittest.Rev("nixbus/1234/2"), first.Revision)
	require.Equal(t, "main", first.Branch)
	require.Equal(t, "jane", first.Uploader)
	require.Equal(t, "I"+gerrittest.Rev("nixbus/1234"), first.ChangeId)
	require.Equal(t, int64(1700012342), first.CreatedUnix)
	require.Equal(t, "nix/pkgs", got[1].Project)
	require.Equal(t, "ssh://nixbus@"+srv.Addr+"/nix/pkgs", got[1].RepoUrl)

	require.Equal(t, 2.0, testutil.ToFloat64(s.metrics.malformed))
	require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.dropped))
	require.Equal(t, 2.0, testutil.ToFloat64(s.metrics.duplicates), "the repeated patchset, and ref-updated after change-merged")
	require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.ignored.WithLabelValues(reasonKind)))
	require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.ignored.WithLabelValues(reasonProject)))
	require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.ignored.WithLabelValues(reasonRef)))
	require.Contains(t, srv.Commands()[0], "gerrit stream-events -s patchset-created")
}

func TestReconnectLosesAndDoublesNothing(t *testing.T) {
	// Every new session repeats the last 3 events it already sent.
	srv := gerrittest.Start(t, gerrittest.Options{Resend: 3})
	_, js := natstest.Start(t).Connect(t)
	logs := &syncBuffer{}
	s := start(t, js, fastConfig(), srv.SSHConfig(), logs)

	srv.Push(gerrittest.PatchsetCreated("nixbus", 1, 1), gerrittest.PatchsetCreated("nixbus", 2, 1))
	eventually(t, "first two published", func() bool { return publishedCount(t.Context(), js) == 2 })

	// The connection dies halfway through the third event.
	srv.DropNextMidLine()
	srv.Push(gerrittest.PatchsetCreated("nixbus", 3, 1))
	srv.WaitStreams(t, 2)
	srv.Push(gerrittest.PatchsetCreated("nixbus", 4, 1))
	eventually(t, "four published", func() bool { return publishedCount(t.Context(), js) == 4 })

	// And once more, dropped between events.
	srv.DropConnections()
	srv.WaitStreams(t, 3)
	srv.Push(gerrittest.PatchsetCreated("nixbus", 5, 1))
	eventually(t, "five published", func() bool { return publishedCount(t.Context(), js) == 5 })
	eventually(t, "resent events seen", func() bool { return testutil.ToFloat64(s.metrics.duplicates) >= 5 })

	require.Equal(t, []string{
		"PATCHSET_CREATED 1/1 refs/changes/01/1/1",
		"PATCHSET_CREATED 2/1 refs/changes/02/2/1",
		"PATCHSET_CREATED 3/1 refs/changes/03/3/1",
		"PATCHSET_CREATED 4/1 refs/changes/04/4/1",
		"PATCHSET_CREATED 5/1 refs/changes/05/5/1",
	}, keys(published(t, js)))
	require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.malformed), "the cut-off line")
	require.GreaterOrEqual(t, testutil.ToFloat64(s.metrics.connects.WithLabelValues("ok")), 3.0)
}

func TestRestartPublishesNothingTwice(t *testing.T) {
	// A restarted (or second) ingest has no memory of what it sent; the
	// message ids make JetStream drop what it stored already.
	srv := gerrittest.Start(t, gerrittest.Options{Resend: 10})
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	srv.Push(gerrittest.PatchsetCreated("nixbus", 1, 1), gerrittest.CommentAdded("nixbus", 1, 1, "recheck"))
	for i := range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		s, err := New(fastConfig(), Deps{JS: js, Logger: slog.New(slog.DiscardHandler), SSH: srv.SSHConfig()})
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		if i == 1 {
			srv.Push(gerrittest.PatchsetCreated("nixbus", 2, 1))
		}
		eventually(t, "events read", func() bool { return read(s) >= 2+i })
		cancel()
		require.NoError(t, <-done)
	}
	require.Equal(t, []string{
		"PATCHSET_CREATED 1/1 refs/changes/01/1/1",
		"RECHECK 1/1 refs/changes/01/1/1",
		"PATCHSET_CREATED 2/1 refs/changes/02/2/1",
	}, keys(published(t, js)))
}

func TestKeepaliveReconnects(t *testing.T) {
	srv := gerrittest.Start(t, gerrittest.Options{})
	_, js := natstest.Start(t).Connect(t)
	logs := &syncBuffer{}
	start(t, js, fastConfig(), srv.SSHConfig(), logs)
	srv.WaitStreams(t, 1)
	srv.StallKeepalives()
	srv.WaitStreams(t, 2)
	srv.Push(gerrittest.PatchsetCreated("nixbus", 9, 1))
	eventually(t, "published after reconnect", func() bool { return publishedCount(t.Context(), js) == 1 })
	require.Contains(t, logs.String(), "ssh keepalive: no answer")
}

func TestWrongHostKeyIsRefused(t *testing.T) {
	srv := gerrittest.Start(t, gerrittest.Options{})
	_, js := natstest.Start(t).Connect(t)
	ssh := srv.SSHConfig()
	ssh.KnownHostsFile = gerrittest.WriteKnownHosts(t, srv.Addr, gerrittest.NewSigner(t).PublicKey())
	logs := &syncBuffer{}
	s := start(t, js, fastConfig(), ssh, logs)
	srv.Push(gerrittest.PatchsetCreated("nixbus", 1, 1))
	eventually(t, "refused twice", func() bool { return testutil.ToFloat64(s.metrics.connects.WithLabelValues("error")) >= 2 })
	require.Contains(t, logs.String(), "gerrit host key mismatch for [127.0.0.1]:")
	require.Contains(t, logs.String(), ssh.KnownHostsFile)
	require.Empty(t, srv.Commands())
	require.Zero(t, srv.AuthFailures())
	require.Empty(t, published(t, js))
}

func TestIdleWithoutGerrit(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	logs := &syncBuffer{}
	start(t, js, Config{}, gerrit.SSHConfig{}, logs)
	eventually(t, "idle", func() bool { return strings.Contains(logs.String(), "no gerrit configured") })
}
