package drv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/jsontok"
	"nixbus.dev/nixbus/pkg/nix"
)

func TestParseShowDerivation(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want MapGraph
	}{
		{
			name: "nix 2.8 show-derivation",
			in: `{
  "/nix/store/b-b.drv": {"outputs": {"out": {"path": "/nix/store/o-b"}}, "inputSrcs": [],
    "inputDrvs": {"/nix/store/a-a.drv": ["out"], "/nix/store/c-c.drv": ["out", "dev"]},
    "system": "x86_64-linux", "builder": "/bin/sh", "args": ["-c", "echo \"}{][\\\" > $out"],
    "env": {"a": "x\u00e9\ud83d\ude00", "n": 1.5e3, "t": true, "z": null, "deep": [[{}], {"k": [1, 2]}]}},
  "/nix/store/a-a.drv": {"inputDrvs": {}, "env": {}}
}`,
			want: MapGraph{"/nix/store/b-b.drv": {"/nix/store/a-a.drv", "/nix/store/c-c.drv"}, "/nix/store/a-a.drv": nil},
		},
		{
			name: "newer nix keyed by basename with structured inputDrvs",
			in: `{"b-b.drv": {"inputDrvs": {"a-a.drv": {"dynamicOutputs": {}, "outputs": ["out"]}}},
"a-a.drv": {"inputDrvs": {}}}`,
			want: MapGraph{"/nix/store/b-b.drv": {"/nix/store/a-a.drv"}, "/nix/store/a-a.drv": nil},
		},
		{name: "empty", in: " {} \n", want: MapGraph{}},
		{name: "a repeated inputDrvs counts as its last", in: `{"/nix/store/b.drv": {"inputDrvs": {"/nix/store/x.drv": []}, "inputDrvs": {"/nix/store/a.drv": []}}}`,
			want: MapGraph{"/nix/store/b.drv": {"/nix/store/a.drv"}}},
		{name: "escaped key", in: `{"/nix/store/q\"x.drv": {"inputDrvs": {"\/nix\/store\/a.drv": []}}}`,
			want: MapGraph{`/nix/store/q"x.drv`: {"/nix/store/a.drv"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseShowDerivation(strings.NewReader(tt.in))
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			// One byte at a time exercises every buffer refill path.
			got, err = ParseShowDerivation(iotest.OneByteReader(strings.NewReader(tt.in)))
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			// The indexed reading holds the same graph.
			ig, err := ParseShowDerivationIndexed(iotest.HalfReader(strings.NewReader(tt.in)))
			require.NoError(t, err)
			require.Equal(t, len(tt.want), ig.Derivations())
			for d, ins := range tt.want {
				in, err := ig.Inputs(d)
				require.NoError(t, err)
				require.Equal(t, ins, in, d)
			}
		})
	}
}

func TestParseShowDerivationErrors(t *testing.T) {
	tests := []string{
		``,
		`[]`,
		`{"a": `,
		`{"a": {"inputDrvs": {"b": [}}}`,
		`{"a": {"inputDrvs": ["b"]}}`,
		`{"a": {"env": "unterminated}}`,
		`{"a": {}} trailing`,
		`{"a\q": {}}`,
		`{"a" {}}`,
		`{"a": {"env": {"k": ]}}}`,
	}
	for _, in := range tests {
		t.Run(in, func(t *testing.T) {
			_, err := ParseShowDerivation(strings.NewReader(in))
			require.Error(t, err)
		})
	}
}

func TestParseShowDerivationReadError(t *testing.T) {
	r := io.MultiReader(strings.NewReader(`{"a": {"inputDrvs": {`), iotest.ErrReader(fmt.Errorf("disk gone")))
	_, err := ParseShowDerivation(r)
	require.ErrorContains(t, err, "disk gone")
}

func TestParseATerm(t *testing.T) {
	in := `Derive([("dev","/nix/store/d-x-dev","",""),("out","/nix/store/o-x","","")],` +
		`[("/nix/store/a-a.drv",["out"]),("/nix/store/b-b.drv",["dev","out"])],["/nix/store/s-src"],` +
		`"x86_64-linux","/bin/sh",["-c","echo \"hi\" \\ \n\t\r done"],` +
		`[("PATH","/usr/bin:/bin"),("empty",""),("out","/nix/store/o-x")])`
	d, err := ParseATerm([]byte(in))
	require.NoError(t, err)
	require.Equal(t, &Derivation{
		Outputs:   map[string]string{"dev": "/nix/store/d-x-dev", "out": "/nix/store/o-x"},
		InputDrvs: []string{"/nix/store/a-a.drv", "/nix/store/b-b.drv"},
		InputSrcs: []string{"/nix/store/s-src"},
		System:    "x86_64-linux",
		Builder:   "/bin/sh",
		Args:      []string{"-c", "echo \"hi\" \\ \n\t\r done"},
		Env:       map[string]string{"PATH": "/usr/bin:/bin", "empty": "", "out": "/nix/store/o-x"},
	}, d)

	in2 := `DrvWithVersion("xp-dyn-drv",[("out","","r:sha256","")],[("/nix/store/a-a.drv",(["out"],[("out",(["x"],[]))])),("/nix/store/b.drv",([],[]))],[],"s","b",[],[])`
	d, err = ParseATerm([]byte(in2))
	require.NoError(t, err)
	require.Equal(t, []string{"/nix/store/a-a.drv", "/nix/store/b.drv"}, d.InputDrvs)
	in3, err := parseInputDrvs([]byte(in2))
	require.NoError(t, err)
	require.Equal(t, d.InputDrvs, in3)
}

func TestParseATermErrors(t *testing.T) {
	tests := []string{
		``,
		`Derive(`,
		`Derive([("out","/p","","")],[],[],"s","b",[],[]`,
		`Derive([("out","/p","")],[],[],"s","b",[],[])`,
		`Derive([],[("/a.drv")],[],"s","b",[],[])`,
		`Derive([],[],[],"s,"b",[],[])`,
		`Derive([],[],[],"s","b",[],[])junk`,
		`Derive([],[],[],"s","b",["\`,
		`Derive([],[("/a.drv",(["out"],]))],[],"s","b",[],[])`,
		`Nonsense`,
	}
	for _, in := range tests {
		t.Run(in, func(t *testing.T) {
			_, err := ParseATerm([]byte(in))
			require.Error(t, err)
		})
	}
}

func FuzzParseATerm(f *testing.F) {
	f.Add([]byte(`Derive([("out","/nix/store/o-x","","")],[("/nix/store/a.drv",["out"])],[],"x86_64-linux","/bin/sh",["-c","e\"\\"],[("k","v")])`))
	f.Add([]byte(`DrvWithVersion("xp-dyn-drv",[],[("/a.drv",(["out"],[("o",([],[]))]))],[],"","",[],[])`))
	f.Add([]byte(`Derive([],[],[],"","",[],[])`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseATerm(data)
		in, err2 := parseInputDrvs(data)
		if err == nil {
			require.NotNil(t, d)
			require.NoError(t, err2)
			require.Equal(t, d.InputDrvs, in)
		}
	})
}

// TestParseATermRealNix has nix write real derivations (with strings that
// need escaping) and checks ParseATerm and ParseShowDerivation agree with
// nix show-derivation about them, and that StoreGraph and JobDeps see the
// same graph.
func TestParseATermRealNix(t *testing.T) {
	n := &nix.Nix{Options: map[string]string{"substituters": ""}}
	salt := fmt.Sprintf("%d", time.Now().UnixNano())
	expr := `let
  mk = name: script: extra: derivation ({
    inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ];
    PATH = "/usr/bin:/bin"; salt = "` + salt + `";
  } // extra);
  a = mk "a" "echo a > $out" { };
  helper = mk "helper" "cat ${a} > $out" { outputs = [ "out" "dev" ]; };
  b = mk "b" "cat ${helper.dev} ${helper} > $out" {
    weird = "quote \" backslash \\ newline \n tab \t cr \r dollar \${x} unicode é";
  };
in b.drvPath`
	out, err := n.Output(t.Context(), []string{"eval"}, "--raw", "--impure", "--expr", expr)
	require.NoError(t, err)
	top := strings.TrimSpace(string(out))
	require.True(t, strings.HasSuffix(top, "-b.drv"), top)

	v, err := n.Version(t.Context())
	require.NoError(t, err)
	js, err := n.Output(t.Context(), nix.ShowDerivationCmd(v), "-r", top)
	require.NoError(t, err)
	var shown map[string]struct {
		Outputs   map[string]struct{ Path string } `json:"outputs"`
		InputSrcs []string                         `json:"inputSrcs"`
		InputDrvs map[string]json.RawMessage       `json:"inputDrvs"`
		System    string                           `json:"system"`
		Builder   string                           `json:"builder"`
		Args      []string                         `json:"args"`
		Env       map[string]string                `json:"env"`
	}
	require.NoError(t, json.Unmarshal(js, &shown))
	require.Len(t, shown, 3)

	g, err := ParseShowDerivation(bytes.NewReader(js))
	require.NoError(t, err)
	ig, err := ParseShowDerivationIndexed(bytes.NewReader(js))
	require.NoError(t, err)
	store := NewStoreGraph()
	for path, want := range shown {
		path = normalise(path)
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		d, err := ParseATerm(data)
		require.NoError(t, err)
		outs := map[string]string{}
		for name, o := range want.Outputs {
			outs[name] = o.Path
		}
		var inputs []string
		for in := range want.InputDrvs {
			inputs = append(inputs, normalise(in))
		}
		require.Equal(t, outs, d.Outputs)
		require.ElementsMatch(t, inputs, d.InputDrvs)
		require.ElementsMatch(t, want.InputSrcs, d.InputSrcs)
		require.Equal(t, want.System, d.System)
		require.Equal(t, want.Builder, d.Builder)
		require.Equal(t, want.Args, d.Args)
		require.Equal(t, want.Env, d.Env)
		require.ElementsMatch(t, d.InputDrvs, g[path])
		fromStore, err := store.Inputs(path)
		require.NoError(t, err)
		require.Equal(t, d.InputDrvs, fromStore)
	}
	var b, a string
	for p := range g {
		switch {
		case strings.HasSuffix(p, "-a.drv"):
			a = p
		case strings.HasSuffix(p, "-b.drv"):
			b = p
		}
	}
	for _, graph := range []Graph{g, ig, store} {
		r, err := Reduce(t.Context(), graph, []string{a, b})
		require.NoError(t, err)
		require.Equal(t, map[string][]string{a: nil, b: {a}}, jobDeps(r))
	}
	require.Contains(t, shown[top].Env["weird"], "quote \" backslash \\ newline \n tab \t cr \r dollar ${x} unicode é")
}

func TestStoreGraphMissing(t *testing.T) {
	g := NewStoreGraph()
	g.StoreDir = t.TempDir()
	const x = "0123456789abcdfghijklmnpqrsvwxyz-x.drv"
	_, err := g.Inputs("00000000000000000000000000000000-nope.drv")
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, os.WriteFile(g.StoreDir+"/"+x, []byte(`Derive([],[("/nix/store/y.drv",["out"])],[],"s","b",[],[])`), 0o644))
	in, err := g.Inputs(x)
	require.NoError(t, err)
	require.Equal(t, []string{"/nix/store/y.drv"}, in)
}

// A flake names any drvPath it likes: only regular .drv files of the store
// are read, and no error quotes what a file holds.
func TestStoreGraphRefusesHostileDrvPaths(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	require.NoError(t, os.Mkdir(store, 0o755))
	const secret = "password=hunter2"
	secretFile := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(secret), 0o644))
	h := "0123456789abcdfghijklmnpqrsvwxyz"
	link := store + "/" + h + "-link.drv"
	require.NoError(t, os.Symlink(secretFile, link))
	notDrv := store + "/" + h + "-text.drv"
	require.NoError(t, os.WriteFile(notDrv, []byte(secret), 0o644))
	fifo := store + "/" + h + "-fifo.drv"
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	big := store + "/" + h + "-big.drv"
	require.NoError(t, os.WriteFile(big, nil, 0o644))
	require.NoError(t, os.Truncate(big, 64<<20))

	for name, p := range map[string]string{
		"outside the store":   secretFile,
		"dot dot":             store + "/../secret",
		"dot dot in the name": store + "/" + h + "-../../secret.drv",
		"device":              "/dev/zero",
		"no hash":             store + "/secret.drv",
		"bad hash alphabet":   store + "/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x.drv",
		"not .drv":            store + "/" + h + "-x",
		"symlink out":         link,
		"not an aterm":        notDrv,
		"fifo":                fifo,
		"huge":                big,
		"relative escape":     "../secret",
		"control chars":       store + "/" + h + "-\x1b[31m.drv",
	} {
		t.Run(name, func(t *testing.T) {
			g := NewStoreGraph()
			g.StoreDir = store
			_, err := g.Inputs(p)
			require.Error(t, err)
			require.NotContains(t, err.Error(), "hunter2")
			require.NotContains(t, err.Error(), "\x1b", "no raw control character")
		})
	}
}

// referenceShow is ParseShowDerivation written plainly with encoding/json
// (inputs compared as sorted sets: a map has no order).
func referenceShow(in []byte) (map[string][]string, error) {
	object := func(raw []byte) bool {
		raw = bytes.TrimSpace(raw)
		return len(raw) > 0 && raw[0] == '{'
	}
	if !object(in) {
		return nil, fmt.Errorf("not an object")
	}
	var top map[string]map[string]json.RawMessage
	if err := json.Unmarshal(in, &top); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(in, &raw); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for d, fields := range top {
		if !object(raw[d]) {
			return nil, fmt.Errorf("derivation %s is not an object", d)
		}
		var ins []string
		if rawIns, ok := fields["inputDrvs"]; ok {
			if !object(rawIns) {
				return nil, fmt.Errorf("inputDrvs of %s is not an object", d)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(rawIns, &m); err != nil {
				return nil, err
			}
			for in := range m {
				ins = append(ins, normalise(in))
			}
		}
		slices.Sort(ins)
		out[normalise(d)] = ins
	}
	return out, nil
}

func FuzzParseShowDerivation(f *testing.F) {
	f.Add(`{"/nix/store/b.drv": {"inputDrvs": {"/nix/store/a.drv": ["out"]}, "env": {"k": "v\"}"}}}`)
	f.Add(`{"b.drv": {"inputDrvs": {"a.drv": {"outputs": ["out"], "dynamicOutputs": {}}}}}`)
	f.Add(`{"a": {"inputDrvs": {"x": 1}, "inputDrvs": {"y": 1, "y": 2}}, "a": {"inputDrvs": {"z": null}}}`)
	f.Add(`{"a": {"inputDrvs": {"x": 1}, "inputDrvs": {"y": 1}}}`)
	f.Add(`{"a": null}`)
	f.Add(`{"a": {"inputDrvs": null}}`)
	f.Fuzz(func(t *testing.T, in string) {
		g, err := ParseShowDerivation(strings.NewReader(in))
		g2, err2 := ParseShowDerivation(iotest.OneByteReader(strings.NewReader(in)))
		require.Equal(t, err == nil, err2 == nil)
		if err == nil {
			require.Equal(t, g, g2)
		}
		if !utf8.ValidString(in) || errors.Is(err, jsontok.ErrTooDeep) {
			return // encoding/json would merge names that are not UTF-8, and nests deeper
		}
		want, werr := referenceShow([]byte(in))
		require.Equal(t, werr == nil, err == nil, "%q: jsontok %v, encoding/json %v", in, err, werr)
		if err != nil {
			return
		}
		got := map[string][]string{}
		for d, ins := range g {
			ins = slices.Clone(ins)
			slices.Sort(ins)
			got[d] = slices.Compact(ins)
		}
		for d := range want {
			want[d] = slices.Compact(want[d])
		}
		require.Equal(t, want, got, "%q", in)
	})
}

func TestParseShowDerivationManyEscapes(t *testing.T) {
	// Long env values full of escapes (build scripts) are scanned once.
	script := strings.Repeat(`echo \"x\"\n`, 100_000)
	in := `{"/nix/store/a.drv": {"env": {"buildPhase": "` + script + `"}, "inputDrvs": {"/nix/store/b.drv": ["out"]}}}`
	for _, r := range []io.Reader{strings.NewReader(in), iotest.HalfReader(strings.NewReader(in))} {
		g, err := ParseShowDerivation(r)
		require.NoError(t, err)
		require.Equal(t, MapGraph{"/nix/store/a.drv": {"/nix/store/b.drv"}}, g)
	}
}
