package evaluator

import (
	"cmp"
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"nixbus.dev/nixbus/pkg/binarycache"
)

// cacheCheck decides "cached" from the binary cache the uploaders write,
// as Nix would before substituting: by the presence of each output's
// narinfo (a file in a file:// cache, HTTP HEAD on an http(s):// one, an
// S3 HEAD on an s3:// bucket), many paths at once. A store only nix opens
// (the local store, ssh://, …) is asked with `nix path-info` instead.
type cacheCheck struct {
	checker *binarycache.Checker
	logger  *slog.Logger
	paths   *prometheus.CounterVec
}

// newCacheCheck returns the check of cfg.CacheURL; nil when nix path-info
// asks the cache.
func newCacheCheck(cfg Config, r prometheus.Registerer, logger *slog.Logger) (*cacheCheck, error) {
	paths := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nixbus_evaluator_cache_paths_total",
		Help: "Output paths looked up in the binary cache, by result (cached, missing, error: the cache could not be asked; the path counts as missing and is built).",
	}, []string{"result"})
	for _, res := range []string{"cached", "missing", "error"} {
		paths.WithLabelValues(res)
	}
	r.MustRegister(paths)
	loc, err := binarycache.Parse(cfg.CacheURL)
	if err != nil || loc.Kind == binarycache.KindNix {
		return nil, err
	}
	checker, err := binarycache.NewChecker(loc, cfg.S3, cmp.Or(cfg.CacheConcurrency, DefaultConfig().CacheConcurrency))
	if err != nil {
		return nil, err
	}
	return &cacheCheck{checker: checker, logger: logger, paths: paths}, nil
}

// have tells which of paths the cache holds. A path the cache could not
// be asked about (after retries) counts as missing, which is never wrong
// (it is built); each is counted, and the run's log says how many.
func (c *cacheCheck) have(ctx context.Context, paths []string) (map[string]bool, error) {
	res, err := c.checker.Have(ctx, paths)
	if err != nil {
		return nil, err
	}
	cached := 0
	for _, ok := range res.Have {
		if ok {
			cached++
		}
	}
	c.paths.WithLabelValues("cached").Add(float64(cached))
	c.paths.WithLabelValues("missing").Add(float64(len(res.Have) - cached - res.Errors))
	c.paths.WithLabelValues("error").Add(float64(res.Errors))
	if res.Errors > 0 {
		c.logger.Warn("binary cache not answering, counting paths as not cached", "paths", res.Errors, "err", res.Err)
	}
	return res.Have, nil
}

func (c *cacheCheck) close() {
	if c != nil {
		c.checker.Close()
	}
}
