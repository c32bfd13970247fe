package cacheuploader

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestMetricSeriesExistAtStart: every labelled series is there before the
// first upload, so that rate() and absent() work from the start.
func TestMetricSeriesExistAtStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	for name, want := range map[string]int{
		"nixbus_cache_uploader_uploads_total":          2, // ok, failed
		"nixbus_cache_uploader_batch_builds":           2, // ok, failed
		"nixbus_cache_uploader_post_merge_links_total": 6, // gcroots, outputs × placed, older, failed
		"nixbus_cache_uploader_nix_calls_total":        3, // sign, copy, path-info
		"nixbus_cache_uploader_s3_paths_total":         2, // uploaded, present
		"nixbus_cache_uploader_upload_seconds":         1,
		"nixbus_cache_uploader_s3_nar_bytes_total":     1,
	} {
		n, err := testutil.GatherAndCount(reg, name)
		require.NoError(t, err)
		require.Equal(t, want, n, name)
	}
}
