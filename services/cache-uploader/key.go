package cacheuploader

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"nixbus.dev/nixbus/pkg/nix"
	"nixbus.dev/nixbus/pkg/secret"
)

// publicKey reads a Nix secret signing key ("name:base64") and returns its
// public key in the form trusted-public-keys takes.
func publicKey(secretFile string) (string, error) {
	data, err := secret.Read(secretFile)
	if err != nil {
		return "", fmt.Errorf("read signing key: %w", err)
	}
	name, b64, ok := strings.Cut(strings.TrimSpace(string(data)), ":")
	if !ok || name == "" {
		return "", fmt.Errorf("signing key %s: not <name>:<base64>", secretFile)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("signing key %s: not a base64 ed25519 secret key", secretFile)
	}
	pub := ed25519.PrivateKey(raw).Public().(ed25519.PublicKey)
	return name + ":" + base64.StdEncoding.EncodeToString(pub), nil
}

// generateKey creates secretFile and secretFile.pub with nix-store
// --generate-binary-cache-key, unless secretFile exists by then: the key
// is made under temporary names and linked into place, so two uploaders
// starting together end up with one key.
func generateKey(n *nix.Nix, name, secretFile string) error {
	dir := filepath.Dir(secretFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key dir: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".nixbus-key-")
	if err != nil {
		return fmt.Errorf("create key dir: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	sec, pub := filepath.Join(tmp, "key.sec"), filepath.Join(tmp, "key.pub")
	// New, which makes the key, has no context: this is one quick command.
	if err := n.Run(n.Exec(context.Background(), nixStoreBin(n), "--generate-binary-cache-key", name, sec, pub), &bytes.Buffer{}); err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	if err := os.Chmod(sec, 0o600); err != nil {
		return fmt.Errorf("restrict signing key: %w", err)
	}
	if err := os.Link(sec, secretFile); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return fmt.Errorf("install signing key: %w", err)
	}
	if err := os.Rename(pub, secretFile+".pub"); err != nil {
		return fmt.Errorf("install public key: %w", err)
	}
	return nil
}

// nixStoreBin is nix-store next to the configured nix, or from PATH.
func nixStoreBin(n *nix.Nix) string {
	if n != nil && strings.ContainsRune(n.Bin, '/') {
		return filepath.Join(filepath.Dir(n.Bin), "nix-store")
	}
	return "nix-store"
}
