package e2e

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// TestTwoBuilderProcessesShareWork runs two `nixbus builder` processes for
// one system next to the other services, each building one thing at a
// time: six independent one-second builds are shared between them, each
// built once.
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
	jobs := map[string]string{}
	for i := range 6 {
		jobs[fmt.Sprintf("j%d", i)] = fmt.Sprintf("sleep 1; echo j%d > $out", i)
	}
	dir := flake(t, jobs)

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
