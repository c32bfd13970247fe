package evaluator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestPublishManyJobs(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamOptions{}))
	const n = 5000
	for _, tc := range []struct {
		name       string
		ackTimeout time.Duration
	}{
		{"acknowledged", 30 * time.Second},
		// Every acknowledgement "times out": all jobs go out again, and
		// de-duplication keeps one of each.
		{"all retried", time.Nanosecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.PublishWindow = 256
			cfg.PublishAckTimeout = tc.ackTimeout
			s, err := New(cfg, Deps{JS: js, Logger: discardLogger()})
			require.NoError(t, err)
			h := &handler{s: s}
			run := bus.RunID(t.Name())
			win, stop := h.runWindow(t.Context(), run)
			defer stop()
			st := h.newJobStream(run, nil, win, discardLogger())
			begin := time.Now()
			for i := range n {
				job := &nixbuspb.Job{RunId: run, Attr: fmt.Sprintf("pkgs.job%d", i), DrvPath: fmt.Sprintf("/nix/store/%032d-job%d.drv", i, i), System: "x86_64-linux"}
				require.NoError(t, st.publish(t.Context(), job))
			}
			require.NoError(t, win.Flush(t.Context()))
			t.Logf("published %d jobs in %s", n, time.Since(begin))
			runs, err := js.Stream(t.Context(), bus.StreamRuns)
			require.NoError(t, err)
			info, err := runs.Info(t.Context(), jetstream.WithSubjectFilter(bus.RunSubject(run, bus.RunJobKind)))
			require.NoError(t, err)
			require.EqualValues(t, n, info.State.Subjects[bus.RunSubject(run, bus.RunJobKind)])
		})
	}
}

func TestJobTooLargeForTheBus(t *testing.T) {
	deps := make([]string, 20000)
	for i := range deps {
		deps[i] = fmt.Sprintf("/nix/store/%032d-dep.drv", i)
	}
	job := &nixbuspb.Job{RunId: "r1", Attr: "all", DrvPath: "/nix/store/x-all.drv", System: "x86_64-linux", DependsOn: deps}
	msg, err := jobMsg(bus.RunSubject("r1", bus.RunJobKind), "r1", job, nil)
	require.NoError(t, err)
	var got nixbuspb.Job
	require.NoError(t, bus.Decode(msg.Data, &got))
	require.Equal(t, "all", got.Attr)
	require.Empty(t, got.DrvPath)
	require.True(t, strings.HasPrefix(got.EvalError, "job does not fit in a bus message"), got.EvalError)
	require.Equal(t, bus.MsgIDJob("r1", "all"), msg.Header.Get(jetstream.MsgIDHeader))
}
