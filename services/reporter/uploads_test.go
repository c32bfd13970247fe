package reporter

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/natstest"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func startWith(t *testing.T, js jetstream.JetStream, d Deps, edit func(*Config)) *Service {
	t.Helper()
	d.JS = js
	d.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{LogBaseURL: "http://ci/logs", FailedListLimit: 10, AckWait: 5 * time.Second, RetryDelay: 20 * time.Millisecond,
		StaleClaim: time.Minute, UploadWait: time.Minute, FailOnUploadError: true}
	edit(&cfg)
	s, err := New(cfg, d)
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

// runWithUploads publishes what a run of three built jobs leaves on the
// reports stream before its verdict: jobs b1 and b2 share a derivation,
// c was cached. uploads maps a derivation to its upload error ("" ok).
func runWithUploads(t *testing.T, js jetstream.JetStream, run string, uploads map[string]string) *nixbuspb.RunVerdict {
	t.Helper()
	ctx := t.Context()
	require.NoError(t, bus.EnsureStreams(ctx, js, bus.StreamOptions{}))
	pub := bus.NewPublisher(js, slog.New(slog.DiscardHandler))
	for _, o := range []*nixbuspb.JobOutcome{
		{RunId: run, Attr: "a", DrvPath: "/nix/store/a.drv", Status: nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED},
		{RunId: run, Attr: "b1", DrvPath: "/nix/store/b.drv", Status: nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED},
		{RunId: run, Attr: "b2", DrvPath: "/nix/store/b.drv", Status: nixbuspb.JobStatus_JOB_STATUS_SUCCEEDED},
		{RunId: run, Attr: "c", DrvPath: "/nix/store/c.drv", Status: nixbuspb.JobStatus_JOB_STATUS_CACHED},
	} {
		require.NoError(t, pub.Publish(ctx, bus.OutcomeSubject(run), bus.MsgIDOutcome(run, o.GetAttr()), o, nil))
	}
	for drv, e := range uploads {
		publishUpload(t, js, run, drv, e)
	}
	return &nixbuspb.RunVerdict{RunId: run, Change: gerritChange(1), Status: nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED,
		JobCount: 4, SucceededCount: 3, CachedCount: 1}
}

func publishUpload(t *testing.T, js jetstream.JetStream, run, drv, uploadErr string) {
	t.Helper()
	u := &nixbuspb.UploadResult{RunId: run, DrvPath: drv, Ok: uploadErr == "", Error: uploadErr}
	require.NoError(t, bus.NewPublisher(js, slog.New(slog.DiscardHandler)).Publish(t.Context(), bus.UploadSubject(run), bus.MsgIDUpload(run, drv), u, nil))
}

func TestUploadFailuresInTheReview(t *testing.T) {
	tests := []struct {
		name    string
		failOn  bool
		uploads map[string]string
		wait    time.Duration
		vote    int
		want    []string
		notWant []string
	}{
		{
			name: "all uploaded", failOn: true, uploads: map[string]string{"/nix/store/a.drv": "", "/nix/store/b.drv": ""},
			vote: 1, want: []string{"The result is: SUCCESS"}, notWant: []string{"Uploads"},
		},
		{
			name: "one failed", failOn: true,
			uploads: map[string]string{"/nix/store/a.drv": "", "/nix/store/b.drv": "upload s3://ci/nar/x.nar.xz: connection refused"},
			vote:    -1,
			want: []string{"The result is: FAILURE", "Uploads to the binary cache failed (1 of 2 built):\n",
				" - b1: upload s3://ci/nar/x.nar.xz: connection refused\n"},
		},
		{
			name: "one failed, not failing the run", uploads: map[string]string{"/nix/store/a.drv": "", "/nix/store/b.drv": "disk full"},
			vote: 1, want: []string{"The result is: SUCCESS", " - b1: disk full\n"},
		},
		{
			name: "one never reported", failOn: true, uploads: map[string]string{"/nix/store/b.drv": ""}, wait: time.Second,
			vote: -1, want: []string{"The result is: FAILURE", " - a: no upload reported within 1s of the verdict\n"},
		},
		{
			// A reporter that reads the verdict after its wait has passed
			// (restarted, or slow) still reads the stored outcomes first.
			name: "wait over before the verdict is read", failOn: true, uploads: map[string]string{"/nix/store/b.drv": ""}, wait: time.Nanosecond,
			vote: -1, want: []string{"The result is: FAILURE", " - a: no upload reported within 1ns of the verdict\n"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.Start(t)
			_, js := srv.Connect(t)
			poster := &recorder{}
			s := startWith(t, js, Deps{Gerrit: poster}, func(c *Config) {
				c.FailOnUploadError = tt.failOn
				if tt.wait > 0 {
					c.UploadWait = tt.wait
				}
			})
			run := "rup" + string(rune('a'+i))
			publishVerdict(t, js, runWithUploads(t, js, run, tt.uploads), "v-"+run)
			require.Eventually(t, func() bool { return poster.count() == 1 }, 30*time.Second, 10*time.Millisecond)
			poster.mu.Lock()
			defer poster.mu.Unlock()
			p := poster.posts[0]
			require.Equal(t, tt.vote, p.Verified, p.Message)
			for _, w := range tt.want {
				require.Contains(t, p.Message, w)
			}
			for _, w := range tt.notWant {
				require.NotContains(t, p.Message, w)
			}
			failed := float64(strings.Count(p.Message, "\n - "))
			if strings.Contains(p.Message, "Uploads") {
				require.Equal(t, failed, testutil.ToFloat64(s.metrics.uploadFailures))
			}
		})
	}
}

// TestReviewWaitsForUploads: a verdict published before its run's last
// upload is reported gets its review only after that upload.
func TestReviewWaitsForUploads(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	poster := &recorder{}
	startWith(t, js, Deps{Gerrit: poster}, func(*Config) {})
	run := "rlate"
	publishVerdict(t, js, runWithUploads(t, js, run, map[string]string{"/nix/store/a.drv": ""}), "v-"+run)
	// The reporter holds the verdict: taken, not acked, no review.
	require.Eventually(t, func() bool {
		c, err := js.Consumer(t.Context(), bus.StreamReports, Consumer)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.NumAckPending == 1 && info.NumPending == 0
	}, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, poster.count())
	publishUpload(t, js, run, "/nix/store/b.drv", "")
	require.Eventually(t, func() bool { return poster.count() == 1 }, 30*time.Second, 10*time.Millisecond)
	poster.mu.Lock()
	defer poster.mu.Unlock()
	require.Equal(t, 1, poster.posts[0].Verified, poster.posts[0].Message)
	require.NotContains(t, poster.posts[0].Message, "Uploads")
}
