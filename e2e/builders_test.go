package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestTwoBuilderProcessesShareWork runs two `nixbus builder` processes for
// one system next to the other services, each building one thing at a
// time: six independent builds, held until two run at once, are shared
// between them, each built once.
func TestTwoBuilderProcessesShareWork(t *testing.T) {
	bin := buildNixbus(t)
	srv := natstest.Start(t)
	state := t.TempDir()
	for _, name := range app.Names() {
		if name != "builder" {
			startProc(t, bin, name, procArgs(srv.URL, state, "--log.level", "warn")...)
		}
	}
	for _, b := range []string{"builder-a", "builder-b"} {
		startProc(t, bin, "builder", procArgs(srv.URL, state, "--log.level", "warn",
			"--builder.name", b, "--builder.concurrency", "1", "--builder.work-dir", t.TempDir())...)
	}
	m := newMarks(t)
	jobs := map[string]string{}
	for i := range 6 {
		job := fmt.Sprintf("j%d", i)
		jobs[job] = m.script(job, m.hold("all")+"; echo "+job+" > $out")
	}
	dir := flake(t, jobs)

	// Two builds at once, each builder building one at a time: each
	// builder has one. follow blocks until the run ends, so the release
	// comes from here.
	go func() {
		for t.Context().Err() == nil {
			if started, _ := filepath.Glob(filepath.Join(string(m), "j*.started.*")); len(started) >= 2 {
				_ = os.WriteFile(filepath.Join(string(m), "all.release"), nil, 0o644)
				return
			}
			select {
			case <-t.Context().Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	res, js := follow(t, srv, dir)
	require.Equal(t, nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, res.Verdict.GetStatus())
	require.EqualValues(t, 6, res.Verdict.GetSucceededCount())

	perBuilder := map[string]int{}
	results := buildResults(t, js, res.RunID) // fails on a derivation built twice
	require.Len(t, results, 6)
	for _, r := range results {
		perBuilder[r.GetBuilder()]++
	}
	require.Positive(t, perBuilder["builder-a"], "builder-a built nothing: %v", perBuilder)
	require.Positive(t, perBuilder["builder-b"], "builder-b built nothing: %v", perBuilder)
}
