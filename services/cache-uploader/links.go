package cacheuploader

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"nixbus.dev/nixbus/pkg/nix"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// orderDir holds, per project directory, one file per attribute with the
// order of the run whose outputs the attribute's links point at. Safe
// names are never hidden, so it meets no attribute.
const orderDir = ".nixbus-order"

// postMerge reports whether ev is a post-merge run of the default branch,
// whose outputs get gc roots and output links.
func (c *Config) postMerge(ev *nixbuspb.ChangeEvent) bool {
	switch ev.GetKind() {
	case nixbuspb.ChangeEvent_KIND_CHANGE_MERGED, nixbuspb.ChangeEvent_KIND_REF_UPDATED:
	case nixbuspb.ChangeEvent_KIND_MANUAL:
		// A manual run of a change builds a patchset, not the branch.
		if !c.RootsForManual || ev.GetChange() != 0 {
			return false
		}
	default:
		return false
	}
	branch, ok := eventBranch(ev)
	return ok && branch == strings.TrimPrefix(c.DefaultBranch, "refs/heads/")
}

// eventBranch is the branch a run built: the ref's, when the ref is a
// branch (any other ref, such as refs/changes/..., is not a branch
// build), else the event's branch.
func eventBranch(ev *nixbuspb.ChangeEvent) (string, bool) {
	if ref := ev.GetRef(); ref != "" {
		b, ok := strings.CutPrefix(ref, "refs/heads/")
		return b, ok && b != ""
	}
	b := strings.TrimPrefix(ev.GetBranch(), "refs/heads/")
	return b, b != ""
}

// linker places links to the outputs of post-merge builds: gc roots
// registered with nix, or plain symlinks. Links of one attribute are only
// replaced by a run at least as new as the one that placed them, so a
// late result of an older run (a slow build, a retried upload) never
// takes an attribute back.
type linker struct {
	nix   *nix.Nix
	locks [64]sync.Mutex
}

// place points the links of attr under dir/<project>/ at outputs (output
// name → store path), registering them as gc roots when root is set.
// order is the run's position (the stream sequence of its RunStarted);
// place reports false, and changes nothing, when a newer run placed them.
func (l *linker) place(ctx context.Context, dir string, root bool, project, attr string, outputs map[string]string, order uint64) (bool, error) {
	pdir := filepath.Join(dir, safeName(project))
	orderFile := filepath.Join(pdir, orderDir, safeName(attr))
	mu := &l.locks[lockIndex(orderFile, len(l.locks))]
	mu.Lock()
	defer mu.Unlock()

	if err := os.MkdirAll(filepath.Dir(orderFile), 0o755); err != nil {
		return false, fmt.Errorf("create link dir: %w", err)
	}
	if prev, err := readOrder(orderFile); err != nil {
		return false, err
	} else if prev > order {
		return false, nil
	}
	for _, name := range slices.Sorted(maps.Keys(outputs)) {
		link := filepath.Join(pdir, linkName(attr, name))
		if filepath.Dir(link) != pdir {
			return false, fmt.Errorf("link %q escapes %s", link, pdir)
		}
		var err error
		if root {
			err = l.addRoot(ctx, outputs[name], link)
		} else {
			err = replaceSymlink(outputs[name], link)
		}
		if err != nil {
			return false, err
		}
	}
	if err := writeFileAtomic(orderFile, []byte(strconv.FormatUint(order, 10)+"\n")); err != nil {
		return false, fmt.Errorf("record link order: %w", err)
	}
	return true, nil
}

// addRoot makes link a gc root of path: nix-store writes the symlink
// under a temporary name and renames it over the old one, then registers
// it as an indirect root (a symlink to link in gcroots/auto), which also
// holds if link is replaced later.
func (l *linker) addRoot(ctx context.Context, path, link string) error {
	args := append(l.nix.Args(), "--realise", path, "--add-root", link, "--indirect")
	if err := l.nix.Run(l.nix.Exec(ctx, nixStoreBin(l.nix), args...), &bytes.Buffer{}); err != nil {
		return fmt.Errorf("add gc root %s: %w", link, err)
	}
	return nil
}

// replaceSymlink points link at target, atomically: the new link is made
// under a hidden temporary name and renamed over the old one.
func replaceSymlink(target, link string) error {
	tmp, err := tmpName(link)
	if err != nil {
		return err
	}
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("create link: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return errors.Join(fmt.Errorf("replace link: %w", err), os.Remove(tmp))
	}
	return nil
}

// writeFileAtomic replaces path with a file holding data.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := tmpName(path)
	if err != nil {
		return err
	}
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}

func tmpName(path string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("temporary name: %w", err)
	}
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(b[:])), nil
}

// readOrder reads an order file; a missing one is order 0.
func readOrder(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read link order: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		// A torn or foreign file: let the current run win.
		return 0, nil
	}
	return n, nil
}

func lockIndex(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}
