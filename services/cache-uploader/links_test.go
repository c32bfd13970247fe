package cacheuploader

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

const autoRoots = "/nix/var/nix/gcroots/auto"

func TestSafeName(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct{ in, want string }{
		{"hello", "hello"},
		{"nested.hello-2_x+y=z", "nested.hello-2_x+y=z"},
		{"../../etc", "_._.._etc~"},
		{"..", "_.~"},
		{".", "_~"},
		{"", "_~"},
		{".hidden", "_hidden~"},
		{"a/b", "a_b~"},
		{"new\nline", "new_line~"},
		{"nul\x00x", "nul_x~"},
		{"ünï", "_n_~"},
		{"x~y", "x_y~"},
		{long, strings.Repeat("a", maxNameLen) + "~"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		got := safeName(tt.in)
		if strings.HasSuffix(tt.want, "~") {
			require.True(t, strings.HasPrefix(got, tt.want), "%q → %q", tt.in, got)
			require.Len(t, got, len(tt.want)+12, "%q → %q", tt.in, got)
		} else {
			require.Equal(t, tt.want, got)
		}
		require.Equal(t, filepath.Base(got), got)
		require.False(t, strings.HasPrefix(got, "."), got)
		require.False(t, strings.ContainsFunc(got, func(r rune) bool { return r < ' ' || r == 0x7f || r == '/' }), got)
		require.LessOrEqual(t, len(linkName(tt.in, tt.in)+".tmp-1234567-1234567890"), 255) // nix-store's temporary link
		prev, dup := seen[got]
		require.False(t, dup, "%q and %q both map to %q", prev, tt.in, got)
		seen[got] = tt.in
	}
	// A clean name cannot pose as a changed one.
	forged := safeName("a/b")
	require.NotEqual(t, forged, safeName(forged))
	require.NotEqual(t, safeName("a_b"), safeName("a/b"))
	require.Equal(t, "hello", linkName("hello", "out"))
	require.Equal(t, "hello-dev", linkName("hello", "dev"))
}

func TestPostMerge(t *testing.T) {
	const (
		merged  = nixbuspb.ChangeEvent_KIND_CHANGE_MERGED
		updated = nixbuspb.ChangeEvent_KIND_REF_UPDATED
		manual  = nixbuspb.ChangeEvent_KIND_MANUAL
	)
	tests := []struct {
		name   string
		manual bool
		ev     *nixbuspb.ChangeEvent
		want   bool
	}{
		{"merged", false, &nixbuspb.ChangeEvent{Kind: merged, Branch: "main", Ref: "refs/heads/main"}, true},
		{"ref updated, ref only", false, &nixbuspb.ChangeEvent{Kind: updated, Ref: "refs/heads/main"}, true},
		{"branch only", false, &nixbuspb.ChangeEvent{Kind: merged, Branch: "refs/heads/main"}, true},
		{"other branch", false, &nixbuspb.ChangeEvent{Kind: updated, Branch: "release", Ref: "refs/heads/release"}, false},
		{"ref wins over branch", false, &nixbuspb.ChangeEvent{Kind: updated, Branch: "main", Ref: "refs/heads/mainline"}, false},
		{"change ref", false, &nixbuspb.ChangeEvent{Kind: merged, Branch: "main", Ref: "refs/changes/34/1234/2"}, false},
		{"patchset", false, &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, Branch: "main", Ref: "refs/heads/main"}, false},
		{"recheck", false, &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_RECHECK, Branch: "main"}, false},
		{"no branch", false, &nixbuspb.ChangeEvent{Kind: merged}, false},
		{"manual, off", false, &nixbuspb.ChangeEvent{Kind: manual, Branch: "main", Ref: "refs/heads/main"}, false},
		{"manual, on", true, &nixbuspb.ChangeEvent{Kind: manual, Branch: "main", Ref: "refs/heads/main"}, true},
		{"manual change", true, &nixbuspb.ChangeEvent{Kind: manual, Change: 7, Patchset: 1, Branch: "main"}, false},
		{"manual local flake", true, &nixbuspb.ChangeEvent{Kind: manual, LocalPath: "/src"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{DefaultBranch: "main", RootsForManual: tt.manual}
			require.Equal(t, tt.want, c.postMerge(tt.ev))
		})
	}
}

func publishStarted(t *testing.T, js jetstream.JetStream, run string, ev *nixbuspb.ChangeEvent) {
	t.Helper()
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	err := bus.NewPublisher(js, slog.New(slog.DiscardHandler)).Publish(t.Context(),
		bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run), &nixbuspb.RunStarted{RunId: run, Change: ev}, nil)
	require.NoError(t, err)
}

// linkDirs points the uploader's gc roots and outputs under one temp dir,
// and removes the roots' registrations when the test ends.
func linkDirs(t *testing.T, cfg *Config) (base string) {
	t.Helper()
	base = t.TempDir()
	cfg.GCRootsDir, cfg.OutputsDir = filepath.Join(base, "gcroots"), filepath.Join(base, "outputs")
	unregisterRoots(t, base)
	return base
}

// unregisterRoots removes, when the test ends, the registrations of the
// indirect roots under dir, which would otherwise dangle until nix's
// next garbage collection.
func unregisterRoots(t *testing.T, dir string) {
	t.Cleanup(func() {
		for link := range registeredRoots(t, dir) {
			require.NoError(t, os.Remove(link))
		}
	})
}

// registeredRoots maps the indirect roots under dir to their entry in
// gcroots/auto.
func registeredRoots(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(autoRoots)
	require.NoError(t, err)
	roots := map[string]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(autoRoots, e.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") {
			roots[filepath.Join(autoRoots, e.Name())] = target
		}
	}
	return roots
}

// listLinks lists every entry under base as base-relative path → link
// target ("" for a directory or file), failing on anything but a
// symlink, a directory or an order file.
func listLinks(t *testing.T, base string) map[string]string {
	t.Helper()
	got := map[string]string{}
	require.NoError(t, filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		rel, err := filepath.Rel(base, path)
		require.NoError(t, err)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			got[rel], err = os.Readlink(path)
			require.NoError(t, err)
		case filepath.Base(filepath.Dir(path)) == orderDir:
		default:
			require.True(t, d.IsDir(), "unexpected file %s", path)
		}
		return nil
	}))
	return got
}

func TestPostMergeLinks(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t)
	base := linkDirs(t, &cfg)
	svc := start(t, srv, cfg)
	dep, top := buildChain(t)
	const project = "lix-project/lix"
	hostile := []string{"hello", "../../etc", "a/b", ".hidden", "new\nline", ".."}
	result := func(run, id string, attrs []string, outputs map[string]string) {
		publishResult(t, js, id, &nixbuspb.BuildResult{
			RunId: run, DrvPath: top.drv, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Attrs: attrs, Outputs: outputs,
		})
	}

	// A merge on main, and runs that must get no links: a patchset, another
	// branch, a manual run (not enabled), a run whose start is unknown.
	publishStarted(t, js, "rmerged", &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_CHANGE_MERGED, Project: project, Branch: "main", Ref: "refs/heads/main"})
	publishStarted(t, js, "rpatch", &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_PATCHSET_CREATED, Project: project, Branch: "main", Ref: "refs/changes/34/1234/2", Change: 1234, Patchset: 2})
	publishStarted(t, js, "rrelease", &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_REF_UPDATED, Project: project, Branch: "release", Ref: "refs/heads/release"})
	publishStarted(t, js, "rmanual", &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_MANUAL, Project: project, Branch: "main", Ref: "refs/heads/main"})
	result("rmerged", "m1", hostile, map[string]string{"out": top.out, "dev": dep.out})
	for _, run := range []string{"rpatch", "rrelease", "rmanual", "rnostart"} {
		result(run, run, []string{"other"}, map[string]string{"out": top.out})
	}
	drained(t, js)

	pdir := safeName(project)
	want := map[string]string{}
	for _, kind := range []string{"gcroots", "outputs"} {
		for _, attr := range hostile {
			want[filepath.Join(kind, pdir, linkName(attr, "out"))] = top.out
			want[filepath.Join(kind, pdir, linkName(attr, "dev"))] = dep.out
		}
	}
	require.Equal(t, want, listLinks(t, base))
	roots := registeredRoots(t, base)
	require.Len(t, roots, 2*len(hostile))
	for _, link := range roots {
		require.Equal(t, filepath.Join(cfg.GCRootsDir, pdir), filepath.Dir(link))
	}
	resolved, err := filepath.EvalSymlinks(filepath.Join(cfg.OutputsDir, pdir, "hello"))
	require.NoError(t, err)
	require.Equal(t, top.out, resolved)
	for _, run := range []string{"rmerged", "rpatch", "rrelease", "rmanual", "rnostart"} {
		u := uploads(t, js, run)
		require.Len(t, u, 1, run)
		require.True(t, u[0].GetOk(), u[0].GetError())
	}

	// A newer merge replaces the links of "hello"; a late result of the
	// older run leaves them alone.
	publishStarted(t, js, "rnewer", &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_REF_UPDATED, Project: project, Ref: "refs/heads/main"})
	result("rnewer", "n1", []string{"hello"}, map[string]string{"out": dep.out})
	drained(t, js)
	result("rmerged", "m2", []string{"hello"}, map[string]string{"out": top.out})
	drained(t, js)
	got := listLinks(t, base)
	for _, kind := range []string{"gcroots", "outputs"} {
		require.Equal(t, dep.out, got[filepath.Join(kind, pdir, "hello")], kind)
		require.Equal(t, 1.0, testutil.ToFloat64(svc.metrics.links.WithLabelValues(kind, "older")), kind)
		// The run without a start is the one failure: its change is unknown.
		require.Equal(t, 1.0, testutil.ToFloat64(svc.metrics.links.WithLabelValues(kind, "failed")), kind)
		require.Equal(t, float64(len(hostile)+1), testutil.ToFloat64(svc.metrics.links.WithLabelValues(kind, "placed")), kind)
	}
	require.Len(t, registeredRoots(t, base), 2*len(hostile))
}

// A failure to link costs the upload nothing: it is counted and logged.
func TestPostMergeLinkFailureKeepsUpload(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := testConfig(t)
	base := linkDirs(t, &cfg)
	require.NoError(t, os.WriteFile(cfg.GCRootsDir, nil, 0o644)) // not a directory
	svc := start(t, srv, cfg)
	_, top := buildChain(t)
	publishStarted(t, js, "rmerged", &nixbuspb.ChangeEvent{Kind: nixbuspb.ChangeEvent_KIND_CHANGE_MERGED, Project: "p", Branch: "main"})
	publishResult(t, js, "m1", &nixbuspb.BuildResult{
		RunId: "rmerged", DrvPath: top.drv, Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED,
		Attrs: []string{"job"}, Outputs: map[string]string{"out": top.out},
	})
	drained(t, js)
	u := uploads(t, js, "rmerged")
	require.Len(t, u, 1)
	require.True(t, u[0].GetOk(), u[0].GetError())
	require.Equal(t, 1.0, testutil.ToFloat64(svc.metrics.links.WithLabelValues("gcroots", "failed")))
	require.Equal(t, 1.0, testutil.ToFloat64(svc.metrics.links.WithLabelValues("outputs", "placed")))
	require.Equal(t, map[string]string{"p/job": top.out}, listLinks(t, cfg.OutputsDir))
	require.Empty(t, registeredRoots(t, base))
}
