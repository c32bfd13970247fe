package changeevent

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestPublishManual(t *testing.T) {
	_, js := natstest.Start(t).Connect(t)
	url := "ssh://nixbus@gerrit:29418/nixbus"
	for _, o := range []Options{
		{Project: "nixbus", Change: 1234, Patchset: 5, RepoURL: url},
		{Project: "nixbus", Ref: "refs/changes/34/1234/5", RepoURL: url},
		{Project: "nixbus", Branch: "main", RepoURL: url, EventID: "once"},
		{Project: "nixbus", Branch: "main", RepoURL: url, EventID: "once"},
	} {
		ev, err := Manual(o)
		require.NoError(t, err)
		require.NoError(t, Publish(t.Context(), js, ev))
	}
	got := stored(t, js)
	require.Len(t, got, 3, "two triggers of a change are two runs; one id is one run")
	for _, ev := range got {
		require.Equal(t, nixbuspb.ChangeEvent_KIND_MANUAL, ev.Kind)
		require.Equal(t, url, ev.RepoUrl)
	}
	require.Equal(t, "refs/changes/34/1234/5", got[0].Ref)
	require.Equal(t, int64(1234), got[1].Change)
	require.Equal(t, int32(5), got[1].Patchset)
	require.Equal(t, "refs/heads/main", got[2].Ref)
	require.NotEqual(t, got[0].EventId, got[1].EventId)
}

func TestManualRefuses(t *testing.T) {
	for _, o := range []Options{
		{},
		{Project: "p", RepoURL: "u"},
		{Project: "p", Change: 1, RepoURL: "u"},
		{Project: "p", Change: 1, Patchset: 1},
		{Project: "p", Ref: "refs/changes/35/1234/1", RepoURL: "u"},
		{Project: "p", Ref: "refs/changes/34/1234/1", Change: 99, RepoURL: "u"},
		{Project: "p", Ref: "refs/heads/../../etc", RepoURL: "u"},
		{Project: "p", Branch: "-x", RepoURL: "u"},
		{Project: "p", Branch: "main", Revision: "HEAD", RepoURL: "u"},
	} {
		_, err := Manual(o)
		require.Error(t, err, "%+v", o)
	}
}

func TestManualLocalPath(t *testing.T) {
	a, err := Manual(Options{LocalPath: "/src/flake"})
	require.NoError(t, err)
	b, err := Manual(Options{LocalPath: "/src/flake"})
	require.NoError(t, err)
	require.Equal(t, "/src/flake", a.LocalPath)
	require.Equal(t, "flake", a.Project, "a local run is named after its directory")
	require.NotEqual(t, a.EventId, b.EventId, "every manual run is a new run")
	require.Regexp(t, `^manual-[0-9a-f]{20}$`, a.EventId, "no path in an event id")
}

// stored reads the change stream (a work queue, which takes no ordered
// consumer) message by message.
func stored(t *testing.T, js jetstream.JetStream) []*nixbuspb.ChangeEvent {
	t.Helper()
	st, err := js.Stream(t.Context(), bus.StreamChanges)
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	var out []*nixbuspb.ChangeEvent
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		require.NoError(t, err)
		var ev nixbuspb.ChangeEvent
		require.NoError(t, bus.Decode(m.Data, &ev))
		out = append(out, &ev)
	}
	return out
}

// Running a change again is a manual event of the same change, with an id
// in Manual's scheme: a new run every time, the original left as it was.
func TestAgain(t *testing.T) {
	prev := &nixbuspb.ChangeEvent{EventId: "gerrit-1", Kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, Project: "p",
		Change: 7, Patchset: 2, Ref: "refs/changes/07/7/2", RepoUrl: "ssh://g/p"}
	a, err := Again(prev)
	require.NoError(t, err)
	b, err := Again(prev)
	require.NoError(t, err)
	require.Regexp(t, `^manual-[0-9a-f]{20}$`, a.EventId)
	require.NotEqual(t, a.EventId, b.EventId)
	require.Equal(t, nixbuspb.ChangeEvent_KIND_MANUAL, a.Kind)
	require.Equal(t, prev.Ref, a.Ref)
	require.Equal(t, prev.RepoUrl, a.RepoUrl)
	require.Equal(t, "gerrit-1", prev.EventId, "the original is not changed")
	require.Equal(t, nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, prev.Kind)
}
