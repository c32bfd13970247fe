package gerritingest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/gerrittest"
	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/gerrit"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// Lines in the shapes of Gerrit's documentation, as different versions
// send them.
var (
	docPatchset = gerrittest.PatchsetCreated("nixbus", 1234, 2).JSON()
	// Older Gerrit: numbers as strings. Newer: project as an object.
	docStringNumbers = func() string {
		e := gerrittest.PatchsetCreated("nixbus", 1234, 2)
		e.StringNumbers = true
		return e.JSON()
	}()
	docProjectObject = func() string {
		e := gerrittest.PatchsetCreated("nixbus", 1234, 2)
		e.ProjectObject = true
		return e.JSON()
	}()
	docRecheck  = gerrittest.CommentAdded("nixbus", 1234, 2, "recheck").JSON()
	docMerged   = gerrittest.ChangeMerged("nixbus", "main", 1234, 2, gerrittest.Rev("tip")).JSON()
	docRefMain  = gerrittest.RefUpdated("nixbus", "refs/heads/main", gerrittest.Rev("old"), gerrittest.Rev("tip")).JSON()
	docRefMeta  = gerrittest.RefUpdated("nixbus", "refs/changes/34/1234/meta", gerrittest.Rev("a"), gerrittest.Rev("b")).JSON()
	docRestored = gerrittest.ChangeRestored("nixbus", 1234, 2).JSON()
	docDropped  = gerrittest.DroppedOutput().JSON()
)

func TestDecodeEvent(t *testing.T) {
	rev := gerrittest.Rev("nixbus/1234/2")
	patchset := Event{
		Type: "patchset-created", Project: "nixbus", Branch: "main", Change: 1234, Patchset: 2, Revision: rev,
		Ref: "refs/changes/34/1234/2", Kind: "REWORK", Account: "jane", CreatedOn: 1700012342,
		ChangeID: "I" + gerrittest.Rev("nixbus/1234"),
	}
	for _, tc := range []struct {
		name, line string
		want       Event
		err        string
	}{
		{name: "patchset-created", line: docPatchset, want: patchset},
		{name: "string numbers", line: docStringNumbers, want: patchset},
		{name: "project object", line: docProjectObject, want: patchset},
		{name: "comment-added", line: docRecheck, want: Event{
			Type: "comment-added", Project: "nixbus", Branch: "main", Change: 1234, Patchset: 2, Revision: rev,
			Ref: "refs/changes/34/1234/2", Account: "jane", Comment: "Patch Set 2:\n\nrecheck", CreatedOn: 1700012342,
			ChangeID: "I" + gerrittest.Rev("nixbus/1234"),
		}},
		{name: "ref-updated", line: docRefMain, want: Event{
			Type: "ref-updated", Project: "nixbus", Account: "jane", RefName: "refs/heads/main",
			OldRev: gerrittest.Rev("old"), NewRev: gerrittest.Rev("tip"), CreatedOn: 1700000000,
		}},
		{name: "dropped-output", line: docDropped, want: Event{Type: "dropped-output", CreatedOn: 1700000000}},
		{name: "bare minimum", line: `{"type":"patchset-created"}`, want: Event{Type: "patchset-created"}},
		{name: "mistyped fields are missing", line: `{"type":"patchset-created","change":"x","patchSet":{"number":[1]},"project":7}`,
			want: Event{Type: "patchset-created", Project: "7"}},
		{name: "number edge cases", line: `{"type":"t","change":{"number":"12.0"},"patchSet":{"number":99999999999},"eventCreatedOn":-5}`,
			want: Event{Type: "t", Change: 12}},
		{name: "number strings with blanks", line: `{"type":"t","change":{"number":" 7 "},"patchSet":{"number":"3"}}`,
			want: Event{Type: "t", Change: 7, Patchset: 3}},
		{name: "old ref-updated", line: `{"type":"ref-updated","refUpdate":{"project":"p","refName":"master","newRev":"` + gerrittest.Rev("n") + `"}}`,
			want: Event{Type: "ref-updated", Project: "p", RefName: "master", NewRev: gerrittest.Rev("n")}},
		{name: "not json", line: `patchset-created 1234`, err: "decode event"},
		{name: "array", line: `[{"type":"x"}]`, err: "an array"},
		{name: "null", line: `null`, err: "null"},
		{name: "no type", line: `{"change":{"number":1}}`, err: "no type"},
		{name: "two objects", line: `{"type":"a"} {"type":"b"}`, err: "more than one"},
		{name: "cut off", line: docPatchset[:len(docPatchset)/2], err: "decode event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeEvent([]byte(tc.line))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func testNormalizer(cfg Config) *normalizer {
	return newNormalizer(cfg.withDefaults(), "nixbus", func(p string) string { return "ssh://nixbus@gerrit:29418/" + p })
}

func mustDecode(t testing.TB, line string) Event {
	t.Helper()
	ev, err := DecodeEvent([]byte(line))
	require.NoError(t, err)
	return ev
}

func TestNormalize(t *testing.T) {
	own := gerrittest.CommentAdded("nixbus", 1234, 2, "recheck")
	own.Account = gerrittest.Account{Username: "nixbus"}
	noCode := gerrittest.PatchsetCreated("nixbus", 1234, 3)
	noCode.Kind = "NO_CODE_CHANGE"
	trivial := gerrittest.PatchsetCreated("nixbus", 1234, 3)
	trivial.Kind = "TRIVIAL_REBASE"
	deleted := gerrittest.RefUpdated("nixbus", "refs/heads/main", gerrittest.Rev("old"), "0000000000000000000000000000000000000000")
	for _, tc := range []struct {
		name   string
		cfg    Config
		line   string
		kind   nixbuspb.ChangeEvent_Kind
		ref    string
		reason string
	}{
		{name: "patchset", line: docPatchset, kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, ref: "refs/changes/34/1234/2"},
		{name: "string numbers", line: docStringNumbers, kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, ref: "refs/changes/34/1234/2"},
		{name: "project object", line: docProjectObject, kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, ref: "refs/changes/34/1234/2"},
		{name: "restored", line: docRestored, kind: nixbuspb.ChangeEvent_KIND_CHANGE_RESTORED, ref: "refs/changes/34/1234/2"},
		{name: "recheck", line: docRecheck, kind: nixbuspb.ChangeEvent_KIND_RECHECK, ref: "refs/changes/34/1234/2"},
		{name: "custom recheck", cfg: Config{RecheckCommand: "nixbus: rebuild"},
			line: gerrittest.CommentAdded("nixbus", 1234, 2, "Nixbus: Rebuild").JSON(), kind: nixbuspb.ChangeEvent_KIND_RECHECK, ref: "refs/changes/34/1234/2"},
		{name: "merged", line: docMerged, kind: nixbuspb.ChangeEvent_KIND_CHANGE_MERGED, ref: "refs/heads/main"},
		{name: "ref-updated", line: docRefMain, kind: nixbuspb.ChangeEvent_KIND_REF_UPDATED, ref: "refs/heads/main"},
		{name: "old bare branch", line: gerrittest.RefUpdated("nixbus", "master", "", gerrittest.Rev("n")).JSON(),
			kind: nixbuspb.ChangeEvent_KIND_REF_UPDATED, ref: "refs/heads/master"},
		{name: "skipped kind", line: noCode.JSON(), reason: reasonKind},
		{name: "skip nothing", cfg: Config{SkipKinds: []string{}}, line: noCode.JSON(), kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, ref: "refs/changes/34/1234/3"},
		{name: "configured kinds", cfg: Config{SkipKinds: []string{"trivial_rebase"}}, line: trivial.JSON(), reason: reasonKind},
		{name: "meta ref", line: docRefMeta, reason: reasonRef},
		{name: "tag", line: gerrittest.RefUpdated("nixbus", "refs/tags/v1", "", gerrittest.Rev("n")).JSON(), reason: reasonRef},
		{name: "branch deleted", line: deleted.JSON(), reason: reasonDeleted},
		{name: "unwatched branch", line: gerrittest.RefUpdated("nixbus", "refs/heads/feature", "", gerrittest.Rev("n")).JSON(), reason: reasonBranch},
		{name: "no post-merge", cfg: Config{Branches: []string{}}, line: docMerged, reason: reasonBranch},
		{name: "watched project", cfg: Config{Projects: []string{"nixbus"}}, line: docPatchset, kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, ref: "refs/changes/34/1234/2"},
		{name: "unwatched project", cfg: Config{Projects: []string{"other"}}, line: docPatchset, reason: reasonProject},
		{name: "not a recheck", line: gerrittest.CommentAdded("nixbus", 1234, 2, "please recheck this").JSON(), reason: reasonComment},
		{name: "own comment", line: own.JSON(), reason: reasonOwn},
		{name: "abandoned", line: `{"type":"change-abandoned","change":{"project":"nixbus","number":1}}`, reason: reasonType},
		{name: "no change number", line: `{"type":"patchset-created","project":"nixbus","patchSet":{"number":1}}`, reason: reasonMalformed},
		{name: "no project", line: `{"type":"patchset-created","change":{"number":1},"patchSet":{"number":1}}`, reason: reasonMalformed},
		{name: "merge without revision", line: `{"type":"change-merged","change":{"project":"nixbus","branch":"main","number":1}}`, reason: reasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce, reason := testNormalizer(tc.cfg).normalize(mustDecode(t, tc.line))
			if tc.reason != "" {
				require.Nil(t, ce)
				require.Equal(t, tc.reason, reason)
				return
			}
			require.NotNil(t, ce, reason)
			require.Equal(t, tc.kind, ce.Kind)
			require.Equal(t, tc.ref, ce.Ref)
			require.Equal(t, "nixbus", ce.Project)
			require.Equal(t, "ssh://nixbus@gerrit:29418/nixbus", ce.RepoUrl)
			require.NotEmpty(t, ce.EventId)
			require.NoError(t, gerrit.CheckRef(ce.Ref))
			require.True(t, gerrit.IsCommit(ce.Revision), ce.Revision)
			if ce.Change > 0 {
				require.Equal(t, "main", ce.Branch)
			}
		})
	}
}

func TestEventIDs(t *testing.T) {
	n := testNormalizer(Config{})
	id := func(line string) string {
		t.Helper()
		ce, reason := n.normalize(mustDecode(t, line))
		require.NotNil(t, ce, reason)
		return ce.EventId
	}
	// The same patchset sent again (another eventCreatedOn, another
	// shape) is the same event.
	again := gerrittest.PatchsetCreated("nixbus", 1234, 2)
	again.CreatedOn = 1800000000
	require.Equal(t, id(docPatchset), id(again.JSON()))
	require.Equal(t, id(docPatchset), id(docStringNumbers))
	require.Equal(t, id(docPatchset), id(docProjectObject))
	require.NotEqual(t, id(docPatchset), id(gerrittest.PatchsetCreated("nixbus", 1234, 3).JSON()))
	require.NotEqual(t, id(docPatchset), id(gerrittest.PatchsetCreated("other", 1234, 2).JSON()))
	// A merge is seen as change-merged and as ref-updated: one run.
	require.Equal(t, id(docMerged), id(docRefMain))
	// Each recheck is a new run; the same recheck re-sent is not.
	later := gerrittest.CommentAdded("nixbus", 1234, 2, "recheck")
	later.CreatedOn = 1800000000
	require.Equal(t, id(docRecheck), id(docRecheck))
	require.NotEqual(t, id(docRecheck), id(later.JSON()))
	require.NotEqual(t, id(docRecheck), id(docPatchset))
	require.NotEqual(t, bus.RunID(id(docRecheck)), bus.RunID(id(docPatchset)))
}

func TestIsRecheck(t *testing.T) {
	for _, tc := range []struct {
		comment string
		want    bool
	}{
		{"recheck", true},
		{"Patch Set 3:\n\nrecheck", true},
		{"Patch Set 3: Code-Review+1\n\nRECHECK  \n", true},
		{"Patch Set 3:\n\n(2 comments)\n\nrecheck", true},
		{"Patch Set 3:\r\n\r\nrecheck\r\n", true},
		{"Patch Set 3:\n\nrecheck please", false},
		{"Patch Set 3:\n\nlooks good\nrecheck", false},
		{"Patch Set 3: recheck", false},
		{"", false},
	} {
		require.Equal(t, tc.want, isRecheck(tc.comment, "recheck"), "%q", tc.comment)
	}
	require.False(t, isRecheck("recheck", ""))
}

func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{
		docPatchset, docStringNumbers, docProjectObject, docRecheck, docMerged, docRefMain, docRefMeta,
		docRestored, docDropped, `{"type":"patchset-created"}`, `[]`, `null`, `{"type":1}`, `{"type":"ref-updated","refUpdate":{}}`,
	} {
		f.Add([]byte(s))
	}
	n := testNormalizer(Config{})
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := DecodeEvent(line)
		if err != nil {
			return
		}
		require.NotEmpty(t, ev.Type)
		require.GreaterOrEqual(t, ev.Change, int64(0))
		require.GreaterOrEqual(t, ev.Patchset, int32(0))
		ce, reason := n.normalize(ev)
		if ce == nil {
			require.NotEmpty(t, reason)
			return
		}
		require.NotEmpty(t, ce.EventId)
		require.NotEmpty(t, ce.Project)
		require.NoError(t, gerrit.CheckRef(ce.Ref))
		if ce.Revision != "" {
			require.True(t, gerrit.IsCommit(ce.Revision))
		}
		if _, err := bus.Encode(ce); err != nil && len(line) < bus.MaxMessageSize {
			t.Fatalf("encode: %v", err)
		}
	})
}
