package eval

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"nixbus.dev/nixbus/pkg/nix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testNix() *nix.Nix { return &nix.Nix{Options: map[string]string{"substituters": ""}} }

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// exampleFlake copies examples/flake into a temp dir with a fresh salt, so
// its derivations are new to the store.
func exampleFlake(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "examples", "flake", "flake.nix"))
	require.NoError(t, err)
	return writeFlake(t, string(src))
}

func writeFlake(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(src), 0o644))
	salt := t.Name() + strconv.FormatInt(time.Now().UnixNano(), 10)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "salt.txt"), []byte(salt), 0o644))
	return dir
}

func byAttr(recs []Record) map[string]Record {
	m := map[string]Record{}
	for _, r := range recs {
		m[r.Attr] = r
	}
	return m
}

func TestBuiltinExampleFlake(t *testing.T) {
	dir := exampleFlake(t)
	n := testNix()
	roots := filepath.Join(t.TempDir(), "roots")
	b := &Builtin{Nix: n, Workers: 2, Logger: discard(), GCRootsDir: roots}
	res, err := b.Eval(t.Context(), "path:"+dir+"#hydraJobs")
	require.NoError(t, err)
	require.Equal(t, "builtin", res.Evaluator)
	require.Zero(t, res.Garbage)

	// What nix itself says each job is, asked without walk.nix.
	out, err := n.Output(t.Context(), []string{"eval"}, "--json", "path:"+dir+"#hydraJobs", "--apply",
		`j: builtins.mapAttrs (_: d: { drv = d.drvPath; out = d.outPath; }) {
			inherit (j) chain1 chain2 chain3 broken after-broken;
			"nested.hello" = j.nested.hello; "nested.wrapped" = j.nested.wrapped; }`)
	require.NoError(t, err)
	var want map[string]struct{ Drv, Out string }
	require.NoError(t, json.Unmarshal(out, &want))

	got := byAttr(res.Records)
	require.Len(t, got, len(want)+1, "every job and the eval error, nothing else: %v", res.Records)
	for attr, w := range want {
		r, ok := got[attr]
		require.True(t, ok, attr)
		require.Equal(t, strings.Split(attr, "."), r.AttrPath, attr)
		require.Equal(t, w.Drv, r.DrvPath, attr)
		require.Equal(t, map[string]string{"out": w.Out}, r.Outputs, attr)
		require.Equal(t, "x86_64-linux", r.System, attr)
		require.Equal(t, r.AttrPath[len(r.AttrPath)-1], r.Name, attr)
		require.Empty(t, r.Error, attr)
		require.FileExists(t, r.DrvPath, "the walk instantiates derivations")
		link, err := os.Readlink(filepath.Join(roots, filepath.Base(r.DrvPath)))
		require.NoError(t, err)
		require.Equal(t, r.DrvPath, link)
	}
	ee := got["eval-error"]
	require.Equal(t, "this job does not evaluate", ee.Error)
	require.Empty(t, ee.DrvPath)
	require.Equal(t, []string{"eval-error"}, ee.AttrPath)
}

// hostileFlake has attribute names that would break a shell, a path or a
// Nix expression if they were pasted into one.
const hostileFlake = `{
  outputs = { self }:
    let
      salt = builtins.readFile ./salt.txt;
      job = name: builtins.derivation {
        inherit name salt;
        system = "x86_64-linux";
        builder = "/bin/sh";
        args = [ "-c" "echo ok > $out" ];
        PATH = "/usr/bin:/bin";
      };
    in {
      hydraJobs = {
        "quo\"te" = job "quote";
        "\${dollar}" = job "dollar";
        "back\\slash" = job "backslash";
        "../up" = job "up";
        "a/b" = job "slash";
        "new\nline" = job "newline";
        "with space" = job "space";
        "dot.ted" = job "dotted1";
        dot = { ted = job "dotted2"; };
        "thr\"ow\${x}" = throw "hostile throw";
        nested = { "mi ss" = MISSING; "o k" = job "nestedok"; };
        nothing = null;
        str = "just a string";
      };
    };
}`

func TestBuiltinHostileNames(t *testing.T) {
	jobs := map[string]struct {
		path []string
		name string
	}{
		`"quo\"te"`:        {[]string{`quo"te`}, "quote"},
		`"\${dollar}"`:     {[]string{"${dollar}"}, "dollar"},
		`"back\\slash"`:    {[]string{`back\slash`}, "backslash"},
		`"../up"`:          {[]string{"../up"}, "up"},
		`"a/b"`:            {[]string{"a/b"}, "slash"},
		`"new\nline"`:      {[]string{"new\nline"}, "newline"},
		`"with space"`:     {[]string{"with space"}, "space"},
		`"dot.ted"`:        {[]string{"dot.ted"}, "dotted1"},
		`dot.ted`:          {[]string{"dot", "ted"}, "dotted2"},
		`nested."o k"`:     {[]string{"nested", "o k"}, "nestedok"},
		`"ab\\ort"."x\"y"`: {[]string{`ab\ort`, `x"y`}, "abortsibling"},
	}
	errs := map[string]string{
		`"thr\"ow\${x}"`: "hostile throw",
		`str`:            "unsupported value of type string",
	}
	for _, tc := range []struct {
		name string
		// A broken attribute tryEval cannot catch makes the walk split the tree.
		missing, abort string
		errs           map[string]string
	}{
		{name: "one walk", missing: `({ }).x or (job "missing")`, abort: `job "abortsibling"`},
		{name: "split walk", missing: `({ }).missing`, abort: `abort "hostile abort"`, errs: map[string]string{
			`nested."mi ss"`: "attribute 'missing' missing",
			`"ab\\ort".z`:    "hostile abort",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(hostileFlake, "MISSING", tc.missing, 1)
			src = strings.Replace(src, `nothing = null;`, `nothing = null; "ab\\ort" = { "x\"y" = job "abortsibling"; z = `+tc.abort+`; };`, 1)
			dir := writeFlake(t, src)
			b := &Builtin{Nix: testNix(), Workers: 2, Logger: discard()}
			res, err := b.Eval(t.Context(), "path:"+dir+"#hydraJobs")
			require.NoError(t, err)
			got := byAttr(res.Records)
			for attr, w := range jobs {
				r, ok := got[attr]
				require.True(t, ok, "%s missing from %v", attr, res.Records)
				require.Equal(t, w.path, r.AttrPath, attr)
				require.Empty(t, r.Error, attr)
				require.Equal(t, w.name, r.Name, attr)
				require.True(t, strings.HasSuffix(r.DrvPath, "-"+w.name+".drv"), r.DrvPath)
			}
			want := map[string]string{}
			for k, v := range errs {
				want[k] = v
			}
			for k, v := range tc.errs {
				want[k] = v
			}
			if tc.errs == nil {
				want[`nested."mi ss"`] = ""
				want[`"ab\\ort".z`] = ""
			}
			for attr, msg := range want {
				r, ok := got[attr]
				require.True(t, ok, "%s missing from %v", attr, res.Records)
				if msg == "" {
					require.Empty(t, r.Error, attr)
					continue
				}
				require.Contains(t, r.Error, msg, attr)
				require.Empty(t, r.DrvPath, attr)
			}
			require.Len(t, got, len(jobs)+len(want), "no record lost or invented: %v", res.Records)
		})
	}
}

func TestBuiltinBrokenFlake(t *testing.T) {
	for name, src := range map[string]string{
		"syntax":          `{ outputs = { self }: { hydraJobs = ; }; }`,
		"abort at top":    `{ outputs = { self }: { hydraJobs = abort "top"; }; }`,
		"no hydraJobs":    `{ outputs = { self }: { }; }`,
		"throw at top":    `{ outputs = { self }: { hydraJobs = throw "thrown at top"; }; }`,
		"not a set":       `{ outputs = { self }: { hydraJobs = 3; }; }`,
		"empty hydraJobs": `{ outputs = { self }: { hydraJobs = { }; }; }`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := writeFlake(t, src)
			b := &Builtin{Nix: testNix(), Workers: 2, Logger: discard()}
			res, err := b.Eval(t.Context(), "path:"+dir+"#hydraJobs")
			switch name {
			case "empty hydraJobs":
				require.NoError(t, err)
				require.Empty(t, res.Records)
			default:
				msg, ok := IsFailure(err)
				require.True(t, ok, "%v", err)
				require.NotEmpty(t, msg)
				if name == "throw at top" {
					require.Contains(t, msg, "thrown at top")
				}
			}
		})
	}
}
