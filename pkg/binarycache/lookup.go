package binarycache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// A store path's base name: 32 hash characters (Nix's base-32 alphabet), a
// dash, a name.
var storeBaseRe = regexp.MustCompile(`^[0-9abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]*$`)

// HashPart is the hash of a store path ("/nix/store/<hash>-name"), the
// name of its narinfo in a cache, or "" when path is not a store path.
func HashPart(path string) string {
	base := filepath.Base(path)
	if !storeBaseRe.MatchString(base) {
		return ""
	}
	return base[:32]
}

// NarinfoKey is the key of a store path's narinfo in a cache.
func NarinfoKey(path string) string {
	if h := HashPart(path); h != "" {
		return h + ".narinfo"
	}
	return ""
}

// Checker tells which store paths a cache holds, by the presence of their
// narinfo: a file in a file:// cache, an HTTP HEAD on an http(s):// one (as
// Nix asks), an S3 HEAD on an s3:// one. Writers of these caches put a
// narinfo last, after its NAR (and nixbus's uploader after the narinfos of
// its references), so a narinfo present means the path can be substituted.
type Checker struct {
	loc         Location
	bucket      *Bucket
	http        *http.Client
	concurrency int
	attempts    int
	retryDelay  time.Duration
}

// NewChecker returns a checker of the cache at loc, asking up to
// concurrency paths at once; nil for caches only nix opens (KindNix).
func NewChecker(loc Location, s3 S3Config, concurrency int) (*Checker, error) {
	c := &Checker{loc: loc, concurrency: max(1, concurrency), attempts: 3, retryDelay: 200 * time.Millisecond}
	switch loc.Kind {
	case KindNix:
		return nil, nil
	case KindHTTP:
		tr, err := s3.transport()
		if err != nil {
			return nil, err
		}
		tr.MaxIdleConnsPerHost = c.concurrency
		c.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	case KindS3:
		b, err := OpenS3(loc, s3)
		if err != nil {
			return nil, err
		}
		c.bucket = b
	}
	return c, nil
}

// Close lets the checker's idle connections go.
func (c *Checker) Close() {
	if c == nil {
		return
	}
	if c.bucket != nil {
		c.bucket.Close()
	}
	if c.http != nil {
		c.http.CloseIdleConnections()
	}
}

// Result is what Have found.
type Result struct {
	// Have holds every path asked about: true when the cache has it.
	Have map[string]bool
	// Errors counts paths the cache could not be asked about (after
	// retries); they count as absent, so they are built, which is never
	// wrong. Err is the first such error.
	Errors int
	Err    error
}

// Have asks the cache about every path, concurrency at once. It returns
// an error only when ctx ends.
func (c *Checker) Have(ctx context.Context, paths []string) (Result, error) {
	res := Result{Have: make(map[string]bool, len(paths))}
	var mu sync.Mutex
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(c.concurrency, max(1, len(paths))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				ok, err := c.has(ctx, p)
				mu.Lock()
				res.Have[p] = ok
				if err != nil && ctx.Err() == nil {
					res.Errors++
					if res.Err == nil {
						res.Err = err
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, p := range paths {
		select {
		case work <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	return res, nil
}

// has asks about one path, retrying errors a few times.
func (c *Checker) has(ctx context.Context, path string) (bool, error) {
	key := NarinfoKey(path)
	if key == "" {
		return false, nil // not a store path: nothing can hold it
	}
	var err error
	for attempt := range c.attempts {
		if attempt > 0 {
			t := time.NewTimer(c.retryDelay << (attempt - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return false, ctx.Err()
			case <-t.C:
			}
		}
		var ok bool
		ok, err = c.hasOnce(ctx, key)
		if err == nil || ctx.Err() != nil {
			return ok, err
		}
	}
	return false, err
}

func (c *Checker) hasOnce(ctx context.Context, key string) (bool, error) {
	switch c.loc.Kind {
	case KindFile:
		_, err := os.Stat(filepath.Join(c.loc.Dir, key))
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	case KindS3:
		return c.bucket.Has(ctx, key)
	case KindHTTP:
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.loc.Base+"/"+key, nil)
		if err != nil {
			return false, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return false, fmt.Errorf("ask %s: %w", c.loc.Base, err)
		}
		_ = resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			return true, nil
		// S3 answers 403 for a missing key when listing is not allowed;
		// Nix too takes 403 and 404 as "not there".
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden:
			return false, nil
		default:
			return false, fmt.Errorf("ask %s: HEAD %s: %s", c.loc.Base, key, resp.Status)
		}
	}
	return false, fmt.Errorf("cannot ask %s about a path", c.loc.URL)
}

// NewBucketChecker returns a checker of an open bucket; closing it is the
// bucket's owner's business.
func NewBucketChecker(b *Bucket, concurrency int) *Checker {
	return &Checker{loc: Location{Kind: KindS3, URL: "s3://" + b.name}, bucket: b,
		concurrency: max(1, concurrency), attempts: 3, retryDelay: 200 * time.Millisecond}
}
