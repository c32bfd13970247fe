package cacheuploader

import (
	"context"
	"fmt"
	"slices"

	"go.opentelemetry.io/otel/attribute"

	"nixbus.dev/nixbus/pkg/bus"
)

// maxArgPaths bounds the store paths on one nix command line.
const maxArgPaths = 1000

// nixSink uploads to a cache `nix copy` writes itself (file://, ssh://, …):
// one `nix store sign --recursive` and one `nix copy` per chunk of outputs.
type nixSink struct {
	s     *Service
	known *knownSet // outputs whose closure is in the cache
}

func (n *nixSink) upload(ctx context.Context, outputs []string) error {
	s := n.s
	todo := n.known.missing(outputs)
	for chunk := range slices.Chunk(todo, maxArgPaths) {
		sign := append([]string{"--key-file", s.cfg.SecretKeyFile, "--recursive", "--"}, chunk...)
		if err := s.nixStep(ctx, "sign", []string{"store", "sign"}, sign, len(chunk)); err != nil {
			return fmt.Errorf("sign outputs: %w", err)
		}
		copyArgs := append([]string{"--to", s.cfg.CacheURL, "--"}, chunk...)
		if err := s.nixStep(ctx, "copy", []string{"copy"}, copyArgs, len(chunk)); err != nil {
			return fmt.Errorf("copy outputs to the cache: %w", err)
		}
		n.known.add(chunk...)
	}
	return nil
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
