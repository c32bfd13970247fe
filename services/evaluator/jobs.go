package evaluator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"nixbus.dev/nixbus/services/evaluator/internal/eval"
)

// maxErrorBytes keeps one job's eval error far below the bus's message limit.
const maxErrorBytes = 32 << 10

// cached tells, for each record, whether all its outputs are already
// available: in Config.CacheURL when set; otherwise as nix-eval-jobs found
// (when it checked) or in the local store. A cache that cannot be asked
// counts as empty: the job is then built, which is never wrong.
func (h *handler) cached(ctx context.Context, recs []eval.Record, logger *slog.Logger) ([]bool, error) {
	out := make([]bool, len(recs))
	var ask []int
	var paths []string
	for i, r := range recs {
		if c, known := h.statusKnown(r); known {
			out[i] = c
			continue
		}
		ask = append(ask, i)
		for _, p := range r.Outputs {
			if p != "" {
				paths = append(paths, p)
			}
		}
	}
	if len(ask) == 0 {
		return out, nil
	}
	valid, err := h.validPaths(ctx, paths)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		logger.Warn("check cache, counting nothing as cached", "err", err)
		return out, nil
	}
	for _, i := range ask {
		all := true
		for _, p := range recs[i].Outputs {
			all = all && p != "" && valid[p]
		}
		out[i] = all
	}
	return out, nil
}

// statusKnown tells whether r's cache status is known without asking the
// cache, and what it is: a job with no derivation or outputs is not
// cached; without Config.CacheURL, the evaluator's check of the local
// store (nix-eval-jobs --check-cache-status) is the answer.
func (h *handler) statusKnown(r eval.Record) (cached, known bool) {
	switch {
	case r.DrvPath == "" || r.Error != "" || len(r.Outputs) == 0:
		return false, true
	case h.s.cfg.CacheURL == "" && r.CacheKnown:
		return r.Cached, true
	}
	return false, false
}

// asksNix reports whether r's cache status takes a `nix path-info`: it is
// not known, and no binary cache nixbus reads itself is configured.
func (h *handler) asksNix(r eval.Record) bool {
	_, known := h.statusKnown(r)
	return !known && h.s.cache == nil
}

// validPaths asks which of paths are valid in the cache: see cacheCheck
// for binary caches nixbus reads itself; `nix path-info` asks the others
// (and the local store), PathInfoBatch paths per call.
func (h *handler) validPaths(ctx context.Context, paths []string) (map[string]bool, error) {
	slices.Sort(paths)
	paths = slices.Compact(paths)
	if h.s.cache != nil {
		return h.s.cache.have(ctx, paths)
	}
	valid := make(map[string]bool, len(paths))
	for batch := range slices.Chunk(paths, h.s.cfg.PathInfoBatch) {
		args := []string{"--json"}
		if h.s.cfg.CacheURL != "" {
			args = append(args, "--store", h.s.cfg.CacheURL)
		}
		args = append(args, "--")
		args = append(args, batch...)
		stdout, err := h.s.nix.Output(ctx, []string{"path-info"}, args...)
		if err != nil {
			return nil, fmt.Errorf("nix path-info: %w", err)
		}
		var infos []struct {
			Path  string `json:"path"`
			Valid *bool  `json:"valid"`
		}
		if err := json.Unmarshal(stdout, &infos); err != nil {
			return nil, fmt.Errorf("decode nix path-info output: %w", err)
		}
		for _, in := range infos {
			// Valid paths carry their metadata and no "valid" key.
			valid[in.Path] = in.Valid == nil || *in.Valid
		}
	}
	return valid, nil
}
