package cacheuploader

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"nixbus.dev/nixbus/pkg/binarycache"
)

// s3Sink uploads to an S3 bucket, which Debian's Nix cannot write: the
// missing part of a batch's closure is signed and copied with `nix copy`
// into a staging binary cache (a directory), and its files uploaded from
// there, NARs first and each narinfo only once its NAR and the narinfos of
// its references are in the bucket, so a client never sees a narinfo it
// cannot substitute. Paths whose narinfo is in the bucket are skipped.
type s3Sink struct {
	s       *Service
	loc     binarycache.Location
	bucket  *binarycache.Bucket
	checker *binarycache.Checker
	known   *knownSet // store paths whose narinfo is in the bucket

	infoMu   sync.Mutex
	infoDone bool
}

// pathInfo is one entry of `nix path-info --json`.
type pathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    int64    `json:"narSize"`
	References []string `json:"references"`
}

const (
	typeNarinfo   = "text/x-nix-narinfo"
	typeNar       = "application/x-nix-nar"
	typeCacheInfo = "text/x-nix-cache-info"
	cacheInfoKey  = "nix-cache-info"
)

// A NAR's URL in a narinfo that nix copy wrote.
var narURLRe = regexp.MustCompile(`^nar/[0-9a-z]+\.nar(\.[a-z0-9]+)?$`)

func (k *s3Sink) upload(ctx context.Context, outputs []string) error {
	outs := k.known.missing(outputs)
	if len(outs) == 0 {
		return nil
	}
	if err := k.ensureCacheInfo(ctx); err != nil {
		return err
	}
	infos, err := k.closure(ctx, outs)
	if err != nil {
		return err
	}
	missing, err := k.notInBucket(ctx, infos)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		if err := k.uploadPaths(ctx, infos, missing); err != nil {
			return err
		}
	}
	k.known.add(outs...)
	return nil
}

// ensureCacheInfo writes the bucket's nix-cache-info unless it has one.
func (k *s3Sink) ensureCacheInfo(ctx context.Context) error {
	k.infoMu.Lock()
	defer k.infoMu.Unlock()
	if k.infoDone {
		return nil
	}
	has, err := k.bucket.Has(ctx, cacheInfoKey)
	if err != nil {
		return err
	}
	if !has {
		info := fmt.Sprintf("StoreDir: %s\nWantMassQuery: 1\nPriority: 40\n", k.s.cfg.StoreDir)
		if err := k.bucket.Put(ctx, cacheInfoKey, strings.NewReader(info), int64(len(info)), typeCacheInfo); err != nil {
			return err
		}
		k.s.logger.Info("nix-cache-info written", "bucket", k.bucket.Name())
	}
	k.infoDone = true
	return nil
}

// closure is the path infos of the outputs and everything they refer to.
func (k *s3Sink) closure(ctx context.Context, outs []string) (map[string]*pathInfo, error) {
	infos := map[string]*pathInfo{}
	for chunk := range slices.Chunk(outs, maxArgPaths) {
		args := append([]string{"--recursive", "--json", "--"}, chunk...)
		k.s.metrics.nixCalls.WithLabelValues("path-info").Inc()
		out, err := k.s.nix.Output(ctx, []string{"path-info"}, args...)
		if err != nil {
			return nil, fmt.Errorf("read the outputs' closure: %w", err)
		}
		var list []*pathInfo
		if err := json.Unmarshal(out, &list); err != nil {
			return nil, fmt.Errorf("decode nix path-info output: %w", err)
		}
		for _, in := range list {
			if err := k.s.checkPath(in.Path); err != nil {
				return nil, err
			}
			for _, r := range in.References {
				if err := k.s.checkPath(r); err != nil {
					return nil, err
				}
			}
			if in.NarHash == "" || in.NarSize <= 0 {
				return nil, fmt.Errorf("%s is not valid in the store", in.Path)
			}
			infos[in.Path] = in
		}
	}
	for _, o := range outs {
		if infos[o] == nil {
			return nil, fmt.Errorf("%s is not valid in the store", o)
		}
	}
	return infos, nil
}

// notInBucket is the closure's paths the bucket has no narinfo of,
// references first.
func (k *s3Sink) notInBucket(ctx context.Context, infos map[string]*pathInfo) ([]string, error) {
	ask := k.known.missing(slices.Sorted(maps.Keys(infos)))
	if len(ask) == 0 {
		return nil, nil
	}
	res, err := k.checker.Have(ctx, ask)
	if err != nil {
		return nil, err
	}
	if res.Errors > 0 {
		// Uploading a path again is harmless; not uploading one is not.
		k.s.logger.Warn("ask the bucket for narinfos, uploading the unknown", "paths", res.Errors, "err", res.Err)
	}
	var missing []string
	for _, p := range ask {
		if res.Have[p] {
			k.known.add(p)
			k.s.metrics.paths.WithLabelValues("present").Inc()
		} else {
			missing = append(missing, p)
		}
	}
	return topoOrder(infos, missing), nil
}

// topoOrder sorts paths (a subset of infos) so that each comes after the
// paths of the subset it refers to.
func topoOrder(infos map[string]*pathInfo, paths []string) []string {
	in := make(map[string]bool, len(paths))
	for _, p := range paths {
		in[p] = true
	}
	seen := make(map[string]bool, len(paths))
	out := make([]string, 0, len(paths))
	var visit func(p string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		for _, r := range infos[p].References {
			if r != p && in[r] {
				visit(r)
			}
		}
		out = append(out, p)
	}
	for _, p := range paths {
		visit(p)
	}
	return out
}

// uploadPaths stages the paths with nix copy, which signs them (the
// staging cache's secret-key), and uploads the staged files. paths are in
// topological order.
func (k *s3Sink) uploadPaths(ctx context.Context, infos map[string]*pathInfo, paths []string) error {
	s := k.s
	if err := os.MkdirAll(s.cfg.StagingDir, 0o700); err != nil {
		return fmt.Errorf("staging dir: %w", err)
	}
	staging, err := os.MkdirTemp(s.cfg.StagingDir, "batch-")
	if err != nil {
		return fmt.Errorf("staging dir: %w", err)
	}
	defer func() { _ = os.RemoveAll(staging) }()
	if err := k.stubReferences(staging, infos, paths); err != nil {
		return err
	}
	dest := (&url.URL{Scheme: "file", Path: staging}).String() + "?compression=" + url.QueryEscape(k.loc.Compression)
	if k.loc.ParallelCompression {
		dest += "&parallel-compression=true"
	}
	dest, _ = withSecretKey(dest, s.cfg.SecretKeyFile)
	for chunk := range slices.Chunk(paths, maxArgPaths) {
		copyArgs := append([]string{"--no-recursive", "--to", dest, "--"}, chunk...)
		if err := s.nixStep(ctx, "copy", []string{"copy"}, copyArgs, len(chunk)); err != nil {
			return fmt.Errorf("stage outputs: %w", err)
		}
	}
	return k.push(ctx, staging, infos, paths)
}

// stubReferences gives the staging cache a narinfo of every reference the
// staged paths have outside them (all in the bucket already): nix copy
// refuses a path whose references the destination lacks. Stubs are never
// uploaded.
func (k *s3Sink) stubReferences(staging string, infos map[string]*pathInfo, paths []string) error {
	staged := make(map[string]bool, len(paths))
	for _, p := range paths {
		staged[p] = true
	}
	stubbed := map[string]bool{}
	for _, p := range paths {
		for _, r := range infos[p].References {
			if staged[r] || stubbed[r] {
				continue
			}
			stubbed[r] = true
			ri := infos[r]
			var b strings.Builder
			refs := make([]string, len(ri.References))
			for i, rr := range ri.References {
				refs[i] = filepath.Base(rr)
			}
			fmt.Fprintf(&b, "StorePath: %s\nURL: nar/stub.nar\nCompression: none\nNarHash: %s\nNarSize: %d\nReferences: %s\n",
				ri.Path, ri.NarHash, ri.NarSize, strings.Join(refs, " "))
			if err := os.WriteFile(filepath.Join(staging, binarycache.NarinfoKey(r)), []byte(b.String()), 0o600); err != nil {
				return fmt.Errorf("stage reference: %w", err)
			}
		}
	}
	return nil
}

// push uploads the staged NARs, then the narinfos, references first.
func (k *s3Sink) push(ctx context.Context, staging string, infos map[string]*pathInfo, paths []string) error {
	s := k.s
	narinfos := make(map[string][]byte, len(paths))
	nars := make(map[string]string, len(paths)) // path -> NAR key
	for _, p := range paths {
		data, err := os.ReadFile(filepath.Join(staging, binarycache.NarinfoKey(p)))
		if err != nil {
			return fmt.Errorf("read staged narinfo: %w", err)
		}
		nar := narinfoField(data, "URL")
		if !narURLRe.MatchString(nar) {
			return fmt.Errorf("staged narinfo of %s: unexpected URL %q", p, nar)
		}
		narinfos[p], nars[p] = data, nar
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.S3Uploads)
	for _, p := range paths {
		g.Go(func() error {
			file := filepath.Join(staging, nars[p])
			st, err := os.Stat(file)
			if err != nil {
				return fmt.Errorf("staged NAR of %s: %w", p, err)
			}
			if err := k.bucket.PutFile(gctx, nars[p], file, typeNar); err != nil {
				return err
			}
			s.metrics.bytes.Add(float64(st.Size()))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, level := range levels(infos, paths) {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(s.cfg.S3Uploads)
		for _, p := range level {
			g.Go(func() error {
				data := narinfos[p]
				if err := k.bucket.Put(gctx, binarycache.NarinfoKey(p), bytes.NewReader(data), int64(len(data)), typeNarinfo); err != nil {
					return err
				}
				k.known.add(p)
				s.metrics.paths.WithLabelValues("uploaded").Inc()
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// levels groups paths (in topological order) so that every path's
// references among them are in earlier groups.
func levels(infos map[string]*pathInfo, paths []string) [][]string {
	level := make(map[string]int, len(paths))
	var out [][]string
	for _, p := range paths {
		l := 0
		for _, r := range infos[p].References {
			if lr, ok := level[r]; ok && r != p {
				l = max(l, lr+1)
			}
		}
		level[p] = l
		for len(out) <= l {
			out = append(out, nil)
		}
		out[l] = append(out[l], p)
	}
	return out
}

// narinfoField is the value of a narinfo's "<name>: value" line.
func narinfoField(data []byte, name string) string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
