package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/internal/app"
	"nixbus.dev/nixbus/pkg/natstest"
)

// scrape reads /metrics of inst: every series' value by its text
// ("name{a="x",b="y"}", labels sorted), and every metric's name.
func scrape(ctx context.Context, t require.TestingT, inst *app.Instance) (map[string]float64, map[string]bool) {
	code, body := httpGet(ctx, t, "http://"+inst.HTTPAddr+"/metrics")
	require.Equal(t, http.StatusOK, code, body)
	series, names := map[string]float64{}, map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		series[line[:i]] = v
	}
	return series, names
}

// httpGet returns the status and body url answers with.
func httpGet(ctx context.Context, t require.TestingT, url string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { require.NoError(t, resp.Body.Close()) }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// TestMetricsAfterRun runs the example flake through every service in one
// instance and reads what operators alert on from /metrics: the verdict
// and the vote by status (one label style), builds released and started,
// the builder heard, the queues empty again, the durable consumers, the
// version; and every metric the dashboard and the alerts use exists.
func TestMetricsAfterRun(t *testing.T) {
	srv := natstest.Start(t)
	state := t.TempDir()
	o := testOptions(t, srv.URL, state)
	o.HTTPAddress = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(t.Context())
	c := testConfigs(t)
	// Heartbeats are core NATS: the planner hears the builder's from its
	// own start on.
	c.Builder.HeartbeatInterval = 100 * time.Millisecond
	inst, err := app.Start(ctx, o, c, io.Discard, logger(t))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		require.NoError(t, inst.Wait())
	})
	before, _ := scrape(t.Context(), t, inst)
	sys := app.HostSystem()
	for _, s := range []string{
		`nixbus_planner_verdicts_total{status="failed"}`, `nixbus_reporter_verdicts_total{status="succeeded"}`,
		`nixbus_planner_builders_connected{system="` + sys + `"}`, `nixbus_builder_results_total{status="timed-out",system="` + sys + `"}`,
		`nixbus_gerrit_ingest_published_total{kind="patchset-created"}`, `nixbus_reporter_reviews_total{result="error",via="gerrit"}`,
	} {
		require.Contains(t, before, s, "series created at start-up")
	}

	res, _ := follow(t, srv, saltedExample(t))
	require.Equal(t, "failed", strings.ToLower(strings.TrimPrefix(res.Verdict.GetStatus().String(), "RUN_STATUS_")))

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, _ := scrape(t.Context(), c, inst)
		assert.Equal(c, 1.0, got[`nixbus_planner_builders_connected{system="`+sys+`"}`])
	}, 30*time.Second, 50*time.Millisecond, "the builder is heard")
	got, names := scrape(t.Context(), t, inst)
	for s, want := range map[string]float64{
		`nixbus_planner_verdicts_total{status="failed"}`:                                          1,
		`nixbus_planner_verdicts_total{status="succeeded"}`:                                       0,
		`nixbus_planner_job_outcomes_total{status="skipped"}`:                                     1,
		`nixbus_reporter_verdicts_total{status="failed"}`:                                         1,
		`nixbus_reporter_event_to_vote_seconds_count{status="failed"}`:                            1,
		`nixbus_builder_release_to_start_seconds_count{system="` + sys + `"}`:                     6,
		`nixbus_builder_results_total{status="failed",system="` + sys + `"}`:                      1,
		`nixbus_planner_builds_queued{system="` + sys + `"}`:                                      0,
		`nixbus_planner_oldest_queued_build_age_seconds{system="` + sys + `"}`:                    0,
		`nixbus_evaluator_evaluations_running`:                                                    0,
		`nixbus_evaluator_evaluations_queued`:                                                     0,
		`nixbus_jetstream_consumer_up{consumer="evaluator",stream="NIXBUS_CHANGES"}`:              1,
		`nixbus_jetstream_consumer_pending_messages{consumer="reporter",stream="NIXBUS_REPORTS"}`: 0,
		`nixbus_jetstream_consumer_up{consumer="builder-` + sys + `",stream="NIXBUS_BUILDS"}`:     1,
	} {
		require.Contains(t, got, s)
		require.Equal(t, want, got[s], s)
	}
	require.Less(t, got[`nixbus_reporter_event_to_vote_seconds_sum{status="failed"}`], 300.0)
	var info []string
	for s, v := range got {
		if strings.HasPrefix(s, "nixbus_build_info{") && v == 1 {
			info = append(info, s)
		}
	}
	require.Len(t, info, 1, "one nixbus_build_info")
	require.Contains(t, info[0], `goversion="go`)

	// No label is an enum's name.
	for s := range got {
		require.False(t, strings.Contains(s, `="RUN_STATUS_`) || strings.Contains(s, `="JOB_STATUS_`) || strings.Contains(s, `="KIND_`), s)
	}

	// Every nixbus metric the dashboard and the alerts use exists.
	nameRe := regexp.MustCompile(`\bnixbus_[a-z0-9_]+`)
	for _, f := range []string{"../deploy/grafana/nixbus.json", "../deploy/prometheus/alerts.yml", "../deploy/prometheus/alerts_test.yml"} {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		used := nameRe.FindAllString(string(data), -1)
		require.NotEmpty(t, used, f)
		for _, n := range slices.Compact(slices.Sorted(slices.Values(used))) {
			require.True(t, names[n], "%s uses %s, which no service exports", f, n)
		}
	}
}
