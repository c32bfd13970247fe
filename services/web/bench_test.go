package web

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// BenchmarkRunPage10k times pages of a run of 10,000 jobs, each depending
// on the one before, half of them built: the first look reads the run from
// the streams, later looks only what is new.
func BenchmarkRunPage10k(b *testing.B) {
	f := start(b, testConfig())
	ctx := b.Context()
	const run, n = "rbig", 10000
	require.NoError(b, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunStartedKind), bus.MsgIDStarted(run), &nixbuspb.RunStarted{RunId: run, Change: &nixbuspb.ChangeEvent{Project: "big"}}, nil))
	drv := func(i int) string { return fmt.Sprintf("/nix/store/%032d-job%d.drv", i, i) }
	for i := range n {
		if i%1000 == 0 {
			<-f.js.PublishAsyncComplete() // a bounded number in flight
		}
		j := &nixbuspb.Job{RunId: run, Attr: fmt.Sprintf("job%d", i), DrvPath: drv(i), System: "x86_64-linux"}
		if i > 0 {
			j.DependsOn = []string{drv(i - 1)}
		}
		msg, err := bus.NewMsg(bus.RunSubject(run, bus.RunJobKind), bus.MsgIDJob(run, j.Attr), j, nil)
		require.NoError(b, err)
		_, err = f.js.PublishMsgAsync(msg)
		require.NoError(b, err)
		if i < n/2 {
			r := &nixbuspb.BuildResult{RunId: run, DrvPath: drv(i), Status: nixbuspb.BuildStatus_BUILD_STATUS_SUCCEEDED, Builder: "b"}
			msg, err := bus.NewMsg(bus.RunSubject(run, bus.RunResultKind), bus.MsgIDResult(run, drv(i)), r, nil)
			require.NoError(b, err)
			_, err = f.js.PublishMsgAsync(msg)
			require.NoError(b, err)
		}
	}
	// Evaluated: the page also finds the run's critical path (what the
	// 5,000 jobs not built yet wait on, one after the other).
	require.NoError(b, f.pub.Publish(ctx, bus.RunSubject(run, bus.RunEvalKind), bus.MsgIDEvalDone(run), &nixbuspb.EvalDone{RunId: run, JobCount: n}, nil))
	<-f.js.PublishAsyncComplete()
	client := &http.Client{}
	b.ResetTimer()
	for i := range b.N {
		code, body := get(b, client, fmt.Sprintf("%s/runs/%s?page=%d", f.srv.URL, run, i%100+1))
		require.Equal(b, http.StatusOK, code)
		require.Contains(b, body, "5000 succeeded")
		require.Contains(b, body, `id="critical-path"`)
	}
}
