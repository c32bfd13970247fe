package evaluator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"nixbus.dev/nixbus/pkg/bus"
	"nixbus.dev/nixbus/pkg/drv"
	"nixbus.dev/nixbus/pkg/evaljobs"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
	"nixbus.dev/nixbus/services/evaluator/internal/eval"
)

// maxErrorBytes keeps one job's eval error far below the bus's message limit.
const maxErrorBytes = 32 << 10

// toJobs turns evaluation records into the run's jobs: one per attribute,
// jobs of other systems dropped, eval errors kept as failed jobs, each job
// marked cached or not; and the derivation graph between the jobs, in
// chunks of bounded size, which orders them.
func (h *handler) toJobs(ctx context.Context, run string, recs []eval.Record, logger *slog.Logger) (outcome, error) {
	systems := map[string]bool{}
	for _, s := range h.s.cfg.Systems {
		systems[s] = true
	}
	var out outcome
	seen := map[string]bool{}
	kept := make([]eval.Record, 0, len(recs))
	store := drv.NewStoreGraph()
	store.StoreDir = h.s.cfg.storeDir()
	for _, r := range recs {
		// Names are unique (evaljobs.AttrName): a repeat is the same
		// attribute reported twice, never a second job.
		if seen[r.Attr] {
			logger.Warn("attribute reported twice, keeping the first", "attr", r.Attr)
			continue
		}
		seen[r.Attr] = true
		if r.Error == "" && !systems[r.System] {
			out.dropped++
			continue
		}
		// Everything the evaluation hands over is hostile: a job whose
		// derivation is not a readable .drv of the store fails alone.
		r = evaljobs.Check(r, store.StoreDir)
		if r.Error == "" {
			if _, err := store.Inputs(r.DrvPath); err != nil {
				r.Error = "read the derivation: " + err.Error()
				r.DrvPath, r.Outputs, r.CacheKnown, r.Cached = "", nil, false, false
			}
		}
		kept = append(kept, r)
	}

	cached, err := h.cached(ctx, kept, logger)
	if err != nil {
		return outcome{}, err
	}
	var drvs []string
	for _, r := range kept {
		if r.DrvPath != "" {
			drvs = append(drvs, r.DrvPath)
		}
	}
	graph, err := drv.Reduce(ctx, store, drvs)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{}, ctx.Err()
		}
		out.failure = fmt.Sprintf("read the derivation graph: %v", err)
		return out, nil
	}

	out.jobs = make([]*nixbuspb.Job, 0, len(kept))
	errs := 0
	for i, r := range kept {
		job := &nixbuspb.Job{
			RunId: run, Attr: r.Attr, AttrPath: evaljobs.ShownPath(r.AttrPath), DrvPath: r.DrvPath, System: r.System,
			Name: r.Name, Outputs: r.Outputs, Cached: cached[i],
		}
		if r.Error != "" {
			errs++
			job.EvalError = bus.Truncate(r.Error, maxErrorBytes)
			job.DrvPath, job.Outputs, job.Cached = "", nil, false
		}
		out.jobs = append(out.jobs, job)
	}
	out.graph = bus.GraphChunks(run, graph.Drvs, graph.Edges, h.s.cfg.graphChunkBytes)
	h.s.metrics.jobs.Add(float64(len(out.jobs)))
	h.s.metrics.dropped.Add(float64(out.dropped))
	h.s.metrics.errors.Add(float64(errs))
	return out, nil
}

// cached tells, for each record, whether all its outputs are already
// available: in Config.CacheURL when set; otherwise as nix-eval-jobs found
// (when it checked) or in the local store. A cache that cannot be asked
// counts as empty: the job is then built, which is never wrong.
func (h *handler) cached(ctx context.Context, recs []eval.Record, logger *slog.Logger) ([]bool, error) {
	out := make([]bool, len(recs))
	var ask []int
	var paths []string
	for i, r := range recs {
		if r.DrvPath == "" || r.Error != "" || len(r.Outputs) == 0 {
			continue
		}
		if h.s.cfg.CacheURL == "" && r.CacheKnown {
			out[i] = r.Cached
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
