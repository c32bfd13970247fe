package cacheuploader

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"

	"nixbus.dev/nixbus/pkg/binarycache"
	"nixbus.dev/nixbus/pkg/bus"
)

// maxArgPaths bounds the store paths on one nix command line.
const maxArgPaths = 1000

// nixSink uploads to a cache `nix copy` writes itself (file://, ssh://, …):
// one `nix copy` per chunk of outputs. A binary cache (file://) signs what
// is copied into it with the key (its secret-key setting), so a batch is
// one nix process; a store that cannot sign (ssh://, a local store) gets a
// `nix store sign --recursive` of the outputs first.
type nixSink struct {
	s     *Service
	known *knownSet // outputs whose closure is in the cache
	// dest is where nix copy writes: the cache URL, with the key when
	// the cache signs (signs).
	dest  string
	signs bool
}

func newNixSink(s *Service, loc binarycache.Location) *nixSink {
	n := &nixSink{s: s, known: newKnownSet(knownPaths), dest: s.cfg.CacheURL}
	if loc.Kind == binarycache.KindFile {
		n.dest, n.signs = withSecretKey(s.cfg.CacheURL, s.cfg.SecretKeyFile)
	}
	return n
}

func (n *nixSink) upload(ctx context.Context, outputs []string) error {
	s := n.s
	todo := n.known.missing(outputs)
	for chunk := range slices.Chunk(todo, maxArgPaths) {
		if !n.signs {
			sign := append([]string{"--key-file", s.cfg.SecretKeyFile, "--recursive", "--"}, chunk...)
			if err := s.nixStep(ctx, "sign", []string{"store", "sign"}, sign, len(chunk)); err != nil {
				return fmt.Errorf("sign outputs: %w", err)
			}
		}
		copyArgs := append([]string{"--to", n.dest, "--"}, chunk...)
		if err := s.nixStep(ctx, "copy", []string{"copy"}, copyArgs, len(chunk)); err != nil {
			return fmt.Errorf("copy outputs to the cache: %w", err)
		}
		n.known.add(chunk...)
	}
	return nil
}

// withSecretKey adds the binary cache store setting secret-key=keyFile to
// a cache URL (Nix percent-decodes setting values), so that nix copy signs
// every path it writes there. A URL that already names a secret key is
// left as it is (false: sign separately).
func withSecretKey(cacheURL, keyFile string) (string, bool) {
	base, query, _ := strings.Cut(cacheURL, "?")
	for _, kv := range strings.Split(query, "&") {
		if name, _, _ := strings.Cut(kv, "="); name == "secret-key" {
			return cacheURL, false
		}
	}
	if query != "" {
		query += "&"
	}
	query += "secret-key=" + strings.ReplaceAll(url.QueryEscape(keyFile), "+", "%20")
	return base + "?" + query, true
}

// nixStep runs one nix command of an upload in its own span.
func (s *Service) nixStep(ctx context.Context, name string, cmd, args []string, paths int) error {
	ctx, span := s.tracer.Start(ctx, name)
	span.SetAttributes(attribute.Int("nix.paths", paths))
	s.metrics.nixCalls.WithLabelValues(name).Inc()
	_, err := s.nix.Output(ctx, cmd, args...)
	bus.EndSpan(span, err)
	return err
}
