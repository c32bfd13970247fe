package reporter

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

func TestMessage(t *testing.T) {
	failed := []*nixbuspb.JobOutcome{
		{Attr: "broken", Status: nixbuspb.JobStatus_JOB_STATUS_FAILED, Failure: nixbuspb.FailureKind_FAILURE_KIND_BUILD,
			Reason: "builder for '/nix/store/aaa-broken.drv' failed with exit code 1", LogKey: "r1/aaa-broken.drv"},
		{Attr: "after-broken", Status: nixbuspb.JobStatus_JOB_STATUS_SKIPPED, Failure: nixbuspb.FailureKind_FAILURE_KIND_DEPENDENCY,
			Reason: "dependency broken failed", LogKey: "r1/aaa-broken.drv"},
		{Attr: "flaky", Status: nixbuspb.JobStatus_JOB_STATUS_FAILED, Failure: nixbuspb.FailureKind_FAILURE_KIND_CACHED,
			Reason: "failed in an earlier build (cached failure): builder for '/nix/store/bbb-flaky.drv' failed with exit code 2", LogKey: "r0/bbb-flaky.drv"},
		{Attr: "eval-error", Status: nixbuspb.JobStatus_JOB_STATUS_FAILED, Failure: nixbuspb.FailureKind_FAILURE_KIND_EVAL,
			Reason: "error: this job does not evaluate"},
	}
	tests := []struct {
		name    string
		verdict *nixbuspb.RunVerdict
		limit   int
		want    []string
		notWant []string
		vote    int
	}{
		{
			name:    "success",
			verdict: &nixbuspb.RunVerdict{Status: nixbuspb.RunStatus_RUN_STATUS_SUCCEEDED, JobCount: 3, SucceededCount: 2, CachedCount: 1},
			limit:   10,
			want:    []string{"The result is: SUCCESS\n", "3 jobs: 2 built, 1 cached, 0 failed, 0 skipped."},
			notWant: []string{"Failed checks"},
			vote:    1,
		},
		{
			name: "failures with links",
			verdict: &nixbuspb.RunVerdict{Status: nixbuspb.RunStatus_RUN_STATUS_FAILED, JobCount: 5, FailedCount: 2, SkippedCount: 1,
				Failed: failed},
			limit: 10,
			want: []string{
				"The result is: FAILURE\n",
				"Failed checks:\n",
				" - broken: build failed: builder for '/nix/store/aaa-broken.drv' failed with exit code 1 (see http://ci/logs/r1/aaa-broken.drv)\n",
				" - after-broken: dependency broken failed (see http://ci/logs/r1/aaa-broken.drv)\n",
				" - flaky: failed in an earlier build (cached failure): builder for '/nix/store/bbb-flaky.drv' failed with exit code 2 (see http://ci/logs/r0/bbb-flaky.drv)\n",
				" - eval-error: evaluation error: error: this job does not evaluate\n",
			},
			vote: -1,
		},
		{
			name:    "list capped",
			verdict: &nixbuspb.RunVerdict{Status: nixbuspb.RunStatus_RUN_STATUS_FAILED, FailedCount: 2, SkippedCount: 1, Failed: failed},
			limit:   1,
			want:    []string{" - broken: ", " … and 3 more\n"},
			notWant: []string{"after-broken"},
			vote:    -1,
		},
		{
			name:    "eval error of the whole run",
			verdict: &nixbuspb.RunVerdict{Status: nixbuspb.RunStatus_RUN_STATUS_FAILED, EvalError: "error: flake has no hydraJobs"},
			limit:   10,
			want:    []string{"The result is: FAILURE\n", "Evaluation failed: error: flake has no hydraJobs"},
			vote:    -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := Message(tt.verdict, "http://ci/logs/", tt.limit)
			for _, w := range tt.want {
				require.Contains(t, msg, w)
			}
			for _, w := range tt.notWant {
				require.NotContains(t, msg, w)
			}
			require.Equal(t, tt.vote, Vote(tt.verdict))
			require.True(t, strings.HasPrefix(msg, "The result is: "))
		})
	}
}

func TestValidToken(t *testing.T) {
	for s, want := range map[string]bool{
		"r0123abc": true, "abc-hello-1.0.drv": true, "..": false, ".": false, "": false,
		"a/b": false, "a b": false, "a%2fb": false, "x\x00": false,
	} {
		require.Equal(t, want, validToken(s), s)
	}
}

// TestMessageFits renders the largest verdicts a planner (or anyone who
// can publish one) can send: the review stays under MaxMessageBytes, valid
// UTF-8, and the ReviewPosted record carrying it fits the bus.
func TestMessageFits(t *testing.T) {
	big := func(n int) string { return strings.Repeat("é", n/2) }
	change := &nixbuspb.ChangeEvent{Project: big(200 << 10), Ref: big(200 << 10), ChangeId: big(200 << 10), Change: 1, Patchset: 1}
	for name, v := range map[string]*nixbuspb.RunVerdict{
		"eval error":      {RunId: "r1", Change: change, Status: nixbuspb.RunStatus_RUN_STATUS_FAILED, EvalError: big(1 << 20)},
		"one huge reason": {RunId: "r1", Failed: []*nixbuspb.JobOutcome{{Attr: big(500 << 10), Reason: big(500 << 10), LogKey: "r1/" + big(1000)}}},
		"many failed": {RunId: "r1", Change: change, FailedCount: 5000, Failed: func() (l []*nixbuspb.JobOutcome) {
			for range 5000 {
				l = append(l, &nixbuspb.JobOutcome{Attr: big(4 << 10), Reason: big(2 << 10), LogKey: "r1/x", Failure: nixbuspb.FailureKind_FAILURE_KIND_BUILD})
			}
			return l
		}()},
	} {
		t.Run(name, func(t *testing.T) {
			msg := Message(v, "http://ci/logs/", 5000)
			require.LessOrEqual(t, len(msg), MaxMessageBytes+200)
			require.True(t, utf8.ValidString(msg))
			require.Contains(t, msg, "The result is: FAILURE")
			rec := &nixbuspb.ReviewPosted{RunId: v.GetRunId(), Change: bus.CutChange(v.GetChange()), Verified: -1, Message: msg, Via: "stdout"}
			_, err := bus.Encode(rec)
			require.NoError(t, err)
		})
	}
}

// ESC, BEL and other controls from a flake never reach a review raw.
func TestMessageEscapesControlCharacters(t *testing.T) {
	v := &nixbuspb.RunVerdict{
		Status: nixbuspb.RunStatus_RUN_STATUS_FAILED, JobCount: 2, FailedCount: 2,
		EvalError: "whole eval \x1b]0;owned\a failed",
		Failed: []*nixbuspb.JobOutcome{
			{Attr: "bell\a\x1b[31mred", Status: nixbuspb.JobStatus_JOB_STATUS_FAILED, Failure: nixbuspb.FailureKind_FAILURE_KIND_BUILD,
				Reason: "builder said \x1b[2J\x07 and \u009b31m", LogKey: "r1/aaa-x.drv"},
			{Attr: "e", Status: nixbuspb.JobStatus_JOB_STATUS_FAILED, Failure: nixbuspb.FailureKind_FAILURE_KIND_EVAL,
				Reason: "tab\there \x00 nul"},
		},
	}
	msg := Message(v, "http://localhost/logs", 10)
	for _, r := range msg {
		require.False(t, (r < 0x20 && r != '\n') || (r >= 0x7f && r <= 0x9f), "control %U in %q", r, msg)
	}
	require.Contains(t, msg, `bell\x07\x1b[31mred`)
	require.Contains(t, msg, `builder said \x1b[2J\x07 and \u009b31m`)
	require.Contains(t, msg, `whole eval \x1b]0;owned\x07 failed`)

	_, withUploads := review(v, uploadReport{built: 1, failed: []failedUpload{{attr: "up\x1bload", drv: "d", err: "s3 \x1b[1m"}}}, Config{FailedListLimit: 10})
	require.NotContains(t, withUploads, "\x1b")
}
