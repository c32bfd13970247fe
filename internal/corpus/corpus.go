// Package corpus gives tests and benchmarks a flake over the real nixpkgs
// snapshot in ../shared/corpora (see its README): unpacked into a
// temporary directory per test, never committed.
package corpus

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Tarball is the corpus file's name.
const Tarball = "nixpkgs-20.09pre-28fce08.tar.xz"

// find looks for shared/corpora/Tarball in the parents of the working
// directory, or at $NIXBUS_CORPUS.
func find() (string, bool) {
	if p := os.Getenv("NIXBUS_CORPUS"); p != "" {
		return p, true
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		p := filepath.Join(dir, "shared", "corpora", Tarball)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// Nixpkgs unpacks the corpus into a temporary directory of tb and returns
// the nixpkgs tree. Without the corpus, tb is skipped.
func Nixpkgs(tb testing.TB) string {
	tb.Helper()
	tarball, ok := find()
	if !ok {
		tb.Skip("no nixpkgs corpus (shared/corpora/" + Tarball + " above the working directory, or $NIXBUS_CORPUS)")
	}
	dir := tb.TempDir()
	out, err := exec.CommandContext(tb.Context(), "tar", "-xJf", tarball, "-C", dir).CombinedOutput()
	if err != nil {
		tb.Fatalf("unpack %s: %v: %s", tarball, err, out)
	}
	return filepath.Join(dir, "nixpkgs")
}

// Sets names the package sets of a job set: attribute of nixpkgs -> a Nix
// regular expression its attribute names must match (".*": all).
type Sets map[string]string

// Full is the benchmark's job set: every python3Packages and perlPackages
// attribute that is a derivation or fails to evaluate (5,030 jobs, 326 of
// them eval errors: broken, unfree, unsupported, disabled).
var Full = Sets{"python3Packages": ".*", "perlPackages": ".*"}

// Small is make test's: the python3Packages whose names start with a
// capital letter or an "a", and the perlPackages starting with "A" (393
// jobs, 22 eval errors).
var Small = Sets{"python3Packages": "[A-Za].*", "perlPackages": "A.*"}

// Flake writes a flake whose hydraJobs has one attribute per set in sets,
// holding the set's attributes that are derivations or fail to evaluate
// (nested sets and functions are left out), over nixpkgs through a locked
// path: input. Haskell, whose files the corpus lacks, throws.
func Flake(tb testing.TB, nixpkgs string, sets Sets) string {
	tb.Helper()
	var b strings.Builder
	for set, re := range sets {
		fmt.Fprintf(&b, "        %s = jobsOf %q pkgs.%s;\n", set, re, set)
	}
	src := `{
  inputs.nixpkgs.url = "path:` + nixpkgs + `";
  outputs = { self, nixpkgs }:
    let
      pkgs = import nixpkgs {
        system = "x86_64-linux";
        overlays = [ (final: prev: {
          haskell = throw "haskell is not in this corpus";
          haskellPackages = throw "haskellPackages is not in this corpus";
        }) ];
      };
      jobsOf = re: set: builtins.listToAttrs (builtins.concatMap (n:
        let r = builtins.tryEval (let v = set.${n}; in builtins.isAttrs v && (v.type or null) == "derivation"); in
        if !r.success || r.value then [ { name = n; value = set.${n}; } ] else [ ])
        (builtins.filter (n: builtins.match re n != null) (builtins.attrNames set)));
    in {
      hydraJobs = {
` + b.String() + `      };
    };
}
`
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	// The lock a real repository commits, made without copying nixpkgs
	// into the store (only hashing it).
	out, err := exec.CommandContext(tb.Context(), "nix", "--extra-experimental-features", "nix-command", "hash", "path", nixpkgs).Output()
	if err != nil {
		tb.Fatalf("nix hash path: %v", err)
	}
	node := map[string]any{"path": nixpkgs, "type": "path"}
	locked := map[string]any{"lastModified": 0, "narHash": strings.TrimSpace(string(out)), "path": nixpkgs, "type": "path"}
	lock := map[string]any{
		"nodes": map[string]any{
			"nixpkgs": map[string]any{"locked": locked, "original": node},
			"root":    map[string]any{"inputs": map[string]any{"nixpkgs": "nixpkgs"}},
		},
		"root": "root", "version": 7,
	}
	data, err := json.MarshalIndent(lock, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "flake.lock"), data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// TryEvalApply is the --apply of the bare `nix eval` the built-in
// evaluator is measured against: every job's drvPath, null where
// builtins.tryEval caught an error.
const TryEvalApply = `j: builtins.mapAttrs (_: s: builtins.mapAttrs (_: v: let r = builtins.tryEval v.drvPath; in if r.success then r.value else null) s) j`
