package app

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// runKnown finds a run wherever the bus keeps a trace of it, and nowhere
// else, reading only what is stored.
func TestRunKnown(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	publish := func(subject, id string, m proto.Message) {
		require.NoError(t, pub.Publish(t.Context(), subject, id, m, nil))
	}
	// Two change events wait for an evaluator (none runs here); the
	// first is taken off the queue, as an evaluator would.
	for _, ev := range []string{"taken-event", "pending-event"} {
		publish(bus.ChangeSubject("demo"), bus.MsgIDChange(ev), &nixbuspb.ChangeEvent{EventId: ev, Project: "demo"})
	}
	changes, err := js.Stream(t.Context(), bus.StreamChanges)
	require.NoError(t, err)
	require.NoError(t, changes.DeleteMsg(t.Context(), 1))

	started, finished, jobOnly := bus.RunID("started"), bus.RunID("finished"), bus.RunID("job-only")
	publish(bus.RunSubject(started, bus.RunStartedKind), bus.MsgIDStarted(started), &nixbuspb.RunStarted{RunId: started})
	publish(bus.RunSubject(jobOnly, bus.RunJobKind), bus.MsgIDJob(jobOnly, "a"), &nixbuspb.Job{RunId: jobOnly, Attr: "a"})
	publish(bus.VerdictSubject(finished), bus.MsgIDVerdict(finished), &nixbuspb.RunVerdict{RunId: finished})

	for _, tc := range []struct {
		run   string
		known bool
	}{
		{started, true},
		{jobOnly, true},
		{finished, true},
		{bus.RunID("pending-event"), true},
		{bus.RunID("taken-event"), false}, // its event is gone and no run was started
		{bus.RunID("never"), false},
		{"r..>", false}, // not a run id: never put in a subject
		{"", false},
	} {
		t.Run(tc.run, func(t *testing.T) {
			known, err := runKnown(t.Context(), js, tc.run)
			require.NoError(t, err)
			require.Equal(t, tc.known, known)
		})
	}
}

// `nixbus watch` on a run the bus does not know ends at once, exit 2.
func TestWatchUnknownRun(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	finished := bus.RunID("finished")
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	require.NoError(t, pub.Publish(t.Context(), bus.VerdictSubject(finished), bus.MsgIDVerdict(finished),
		&nixbuspb.RunVerdict{RunId: finished, Status: nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED}, nil))

	watch := func(run string) (int, string, string) {
		dir := t.TempDir()
		stdout, err := os.Create(filepath.Join(dir, "stdout"))
		require.NoError(t, err)
		stderr, err := os.Create(filepath.Join(dir, "stderr"))
		require.NoError(t, err)
		code := watchCommand(t.Context(), []string{"--nats.url", srv.URL, run}, stdout, stderr)
		require.NoError(t, stdout.Close())
		require.NoError(t, stderr.Close())
		out, err := os.ReadFile(stdout.Name())
		require.NoError(t, err)
		errOut, err := os.ReadFile(stderr.Name())
		require.NoError(t, err)
		return code, string(out), string(errOut)
	}
	unknown := bus.RunID("never")
	code, out, errOut := watch(unknown)
	require.Equal(t, exitCouldNot, code, out+errOut)
	require.Contains(t, errOut, "unknown run "+unknown)
	require.Empty(t, out)

	// A run known only by its verdict is watched to that verdict.
	code, out, errOut = watch(finished)
	require.Equal(t, exitSucceeded, code, out+errOut)
	require.Contains(t, out, "verdict: SUCCESS")
}
