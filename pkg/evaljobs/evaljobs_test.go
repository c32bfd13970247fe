package evaljobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Job
		garbage    bool
	}{
		{
			name: "job",
			line: `{"attr":"nested.hello","attrPath":["nested","hello"],"drvPath":"/nix/store/aaa-hello.drv","name":"hello","outputs":{"out":"/nix/store/bbb-hello"},"system":"x86_64-linux"}`,
			want: Job{Attr: "nested.hello", AttrPath: []string{"nested", "hello"}, DrvPath: "/nix/store/aaa-hello.drv", Name: "hello",
				System: "x86_64-linux", Outputs: map[string]string{"out": "/nix/store/bbb-hello"}},
		},
		{
			name: "isCached",
			line: `{"attr":"a","attrPath":["a"],"drvPath":"/nix/store/a.drv","isCached":true,"outputs":{"out":"/nix/store/o","dev":null}}`,
			want: Job{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv", CacheKnown: true, Cached: true,
				Outputs: map[string]string{"out": "/nix/store/o", "dev": ""}},
		},
		{
			name: "cacheStatus local",
			line: `{"attr":"a","drvPath":"/nix/store/a.drv","cacheStatus":"local","isCached":false}`,
			want: Job{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv", CacheKnown: true, Cached: true},
		},
		{
			name: "cacheStatus notBuilt",
			line: `{"attr":"a","drvPath":"/nix/store/a.drv","cacheStatus":"notBuilt","neededBuilds":["/nix/store/a.drv"]}`,
			want: Job{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv", CacheKnown: true},
		},
		{
			name: "error",
			line: `{"attr":"eval-error","attrPath":["eval-error"],"error":"\u001b[31;1merror:\u001b[0m this job does not evaluate\n(use '--show-trace' to show detailed location information)"}`,
			want: Job{Attr: "eval-error", AttrPath: []string{"eval-error"}, Error: "this job does not evaluate"},
		},
		{
			name: "hostile attrPath wins over attr",
			line: `{"attr":"a.b.c","attrPath":["a.b","c\"${x}"],"drvPath":"/nix/store/x.drv"}`,
			want: Job{Attr: `"a.b"."c\"\${x}"`, AttrPath: []string{"a.b", `c"${x}`}, DrvPath: "/nix/store/x.drv"},
		},
		{
			name: "odd field types are ignored",
			line: `{"attr":"a","drvPath":"/nix/store/a.drv","system":7,"outputs":["out"],"isCached":"yes"}`,
			want: Job{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv"},
		},
		{
			name: "null error is no error",
			line: `{"attr":"a","drvPath":"/nix/store/a.drv","error":null}`,
			want: Job{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv"},
		},
		{name: "not json", line: `warning: something odd`, garbage: true},
		{name: "truncated", line: `{"attr":"a","drvPath":"/nix/st`, garbage: true},
		{name: "array", line: `["a"]`, garbage: true},
		{name: "no attr", line: `{"drvPath":"/nix/store/a.drv"}`, garbage: true},
		{name: "no drv nor error", line: `{"attr":"a","name":"a"}`, garbage: true},
		{name: "attr of wrong type", line: `{"attr":3,"drvPath":"/nix/store/a.drv"}`, garbage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLine([]byte(tc.line))
			if tc.garbage {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// parseLines is ReadLines into a slice.
func parseLines(r io.Reader, garbage func(line []byte, why error)) (jobs []Job, bad int, err error) {
	bad, err = ReadLines(r, func(j Job) { jobs = append(jobs, j) }, garbage)
	return jobs, bad, err
}

func TestParseLines(t *testing.T) {
	in := strings.Join([]string{
		`{"attr":"a","drvPath":"/nix/store/a.drv"}`,
		``,
		`garbage`,
		`{"attr":"b","error":"error: boom"}`,
		`{"attr":`,
		`{"attr":"c","drvPath":"/nix/store/c.drv"}`, // no final newline
	}, "\n")
	var seen []string
	recs, bad, err := parseLines(strings.NewReader(in), func(line []byte, _ error) { seen = append(seen, string(line)) })
	require.NoError(t, err)
	require.Equal(t, 2, bad)
	require.Equal(t, []string{"garbage", `{"attr":`}, seen)
	require.Len(t, recs, 3)
	require.Equal(t, "a", recs[0].Attr)
	require.Equal(t, "boom", recs[1].Error)
	require.Equal(t, "c", recs[2].Attr)
}

func TestReadLinesBoundsLines(t *testing.T) {
	huge := `{"attr":"big","error":"` + strings.Repeat("x", MaxLineBytes) + `"}`
	in := strings.Join([]string{`{"attr":"a","drvPath":"/nix/store/a.drv"}`, huge, `{"attr":"c","error":"boom"}`}, "\n")
	var seen []string
	var attrs []string
	bad, err := ReadLines(strings.NewReader(in), func(j Job) { attrs = append(attrs, j.Attr) },
		func(line []byte, why error) { seen = append(seen, string(line)+": "+why.Error()) })
	require.NoError(t, err)
	require.Equal(t, 1, bad)
	require.Equal(t, []string{"a", "c"}, attrs, "the lines around it are read")
	require.Equal(t, []string{huge[:256] + ": line over 16777216 bytes"}, seen, "only its head is kept")
}

func TestParseLineManyEscapes(t *testing.T) {
	// A long error with many escapes is scanned once, not once per escape.
	msg := `error: ` + strings.Repeat(`a\n`, 200_000)
	got, err := ParseLine([]byte(`{"attr":"a","error":"` + msg + `","x":"` + msg + `"}`))
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(strings.Repeat("a\n", 200_000)), got.Error)
}

func TestParseLineLenient(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Job
	}{
		{"escaped keys and names", `{"\u0061ttr":"a","drvPath":"/nix/store/a.drv","outputs":{"o\"ut":"/nix/store/o"}}`,
			Job{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/a.drv", Outputs: map[string]string{`o"ut`: "/nix/store/o"}}},
		{"attrPath with a number is ignored", `{"attr":"a","attrPath":["a",1],"drvPath":"/x.drv"}`,
			Job{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/x.drv"}},
		{"outputs with a number are ignored", `{"attr":"a","drvPath":"/x.drv","outputs":{"out":1}}`,
			Job{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/x.drv"}},
		{"empty error", `{"attr":"a","drvPath":"/x.drv","error":""}`,
			Job{Attr: "a", AttrPath: []string{"a"}, Error: "evaluation failed"}},
		{"error of odd type", `{"attr":"a","error":{"msg":"x"}}`,
			Job{Attr: "a", AttrPath: []string{"a"}, Error: "evaluation failed"}},
		{"invalid UTF-8 kept and escaped", "{\"attr\":\"a\xffb\",\"drvPath\":\"/x.drv\"}",
			Job{Attr: `"a\xffb"`, AttrPath: []string{"a\xffb"}, DrvPath: "/x.drv"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLine([]byte(tc.line))
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	for _, bad := range []string{`{"attr":"a","drvPath":"/x.drv","n":bogus}`, `{"attr":"a","drvPath":"/x.drv"} x`, `{"attr":"a","drvPath":"/x.drv",}`} {
		_, err := ParseLine([]byte(bad))
		require.Error(t, err, bad)
	}
}

// reference is ParseLine written plainly with encoding/json: the fuzz
// test holds the fast reader to it.
func reference(line []byte) (Job, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return Job{}, err
	}
	var job Job
	str := func(key string) string {
		var s string
		if raw, ok := fields[key]; ok && json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	if raw, ok := fields["attrPath"]; ok {
		var path []string
		if json.Unmarshal(raw, &path) == nil && len(path) > 0 {
			job.AttrPath = path
		}
	}
	switch attr := str("attr"); {
	case job.AttrPath != nil:
		job.Attr = AttrName(job.AttrPath)
	case attr != "":
		job.AttrPath = strings.Split(attr, ".")
		job.Attr = AttrName(job.AttrPath)
	default:
		return Job{}, errors.New("no attr")
	}
	job.DrvPath, job.Name, job.System = str("drvPath"), str("name"), str("system")
	if raw, has := fields["error"]; has && string(bytes.TrimSpace(raw)) != "null" {
		job.Error, job.DrvPath = CleanError(str("error")), ""
	}
	if job.DrvPath == "" && job.Error == "" {
		return Job{}, errors.New("neither")
	}
	if raw, ok := fields["outputs"]; ok && job.Error == "" {
		var outs map[string]*string
		if json.Unmarshal(raw, &outs) == nil && outs != nil {
			job.Outputs = make(map[string]string, len(outs))
			for name, p := range outs {
				job.Outputs[name] = ""
				if p != nil {
					job.Outputs[name] = *p
				}
			}
		}
	}
	if raw, ok := fields["isCached"]; ok {
		var b bool
		if json.Unmarshal(raw, &b) == nil && string(bytes.TrimSpace(raw)) != "null" {
			job.CacheKnown, job.Cached = true, b
		}
	}
	switch str("cacheStatus") {
	case "cached", "local":
		job.CacheKnown, job.Cached = true, true
	case "notBuilt":
		job.CacheKnown = true
	}
	return job, nil
}

func FuzzParseLine(f *testing.F) {
	f.Add(`{"attr":"a","attrPath":["a"],"drvPath":"/nix/store/x.drv","system":"x86_64-linux","isCached":true}`)
	f.Add(`{"attr":"e","error":"oops\n\u00e9","outputs":{"out":"/x","dev":null},"cacheStatus":"cached"}`)
	f.Add(`{"attrPath":["a.b","c"],"drvPath":"/x.drv","outputs":[1],"isCached":null,"x":[{"y":-1.5e3}]}`)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseLine([]byte(in))
		skipped, serr := ParseLineSkipOutputs([]byte(in))
		require.Equal(t, err == nil, serr == nil)
		noOutputs := got
		noOutputs.Outputs = nil
		require.Equal(t, noOutputs, skipped, "the same job but for its outputs")
		if !json.Valid([]byte(in)) || !utf8.ValidString(in) {
			return // the fast reader may accept what encoding/json would not; never more
		}
		want, werr := reference([]byte(in))
		require.Equal(t, werr == nil, err == nil, "%q: fast %v, reference %v", in, err, werr)
		if err == nil {
			require.Equal(t, want, got)
		}
	})
}

func TestAttrName(t *testing.T) {
	require.Equal(t, `a.b'-_1.c`, AttrName([]string{"a", "b'-_1", "c"}))
	require.Equal(t, `"1a"."a.b"."".x`, AttrName([]string{"1a", "a.b", "", "x"}))
	require.Equal(t, `"-a"."'a"."a b"`, AttrName([]string{"-a", "'a", "a b"}))
}

// Names that are not UTF-8 (Nix prints them raw) or hold control
// characters stay distinct, printable and byte-exact in AttrPath.
func TestHostileNamesStayDistinct(t *testing.T) {
	lines := []string{
		"{\"attr\":\"x\",\"attrPath\":[\"a\xfd\"],\"drvPath\":\"/nix/store/2.drv\"}",
		"{\"attr\":\"x\",\"attrPath\":[\"a\xfe\"],\"drvPath\":\"/nix/store/3.drv\"}",
		"{\"attr\":\"x\",\"attrPath\":[\"a\ufffd\"],\"drvPath\":\"/nix/store/4.drv\"}",
		"{\"attr\":\"x\",\"attrPath\":[\"a\\u001b[31m\\u0007\"],\"drvPath\":\"/nix/store/5.drv\"}",
		"{\"attr\":\"x\",\"attrPath\":[\"a\xc2\x9b\"],\"drvPath\":\"/nix/store/6.drv\"}",
		"{\"attr\":\"x\",\"attrPath\":[\"a\\\\xfd\"],\"drvPath\":\"/nix/store/7.drv\"}",
		"{\"attr\":\"a\xfd.b\",\"drvPath\":\"/nix/store/8.drv\"}",
	}
	jobs, bad, err := parseLines(strings.NewReader(strings.Join(lines, "\n")), nil)
	require.NoError(t, err)
	require.Zero(t, bad)
	require.Len(t, jobs, len(lines))
	names := map[string]bool{}
	paths := map[string]bool{}
	for _, j := range jobs {
		require.True(t, utf8.ValidString(j.Attr), "%q", j.Attr)
		for _, r := range j.Attr {
			require.False(t, r < 0x20 || (r >= 0x7f && r <= 0x9f), "control %U in %q", r, j.Attr)
		}
		for _, p := range ShownPath(j.AttrPath) {
			require.True(t, utf8.ValidString(p))
		}
		names[j.Attr] = true
		paths[strings.Join(j.AttrPath, "\x00")] = true
	}
	require.Len(t, names, len(lines), "no two attributes share a name: %v", names)
	require.Len(t, paths, len(lines))
	require.Equal(t, []string{"a\xfd"}, jobs[0].AttrPath, "the name as the flake spells it, to address it in Nix")
	require.Equal(t, `"a\xfd"`, jobs[0].Attr)
	require.Equal(t, `"a\xfe"`, jobs[1].Attr)
	require.Equal(t, "\"a\ufffd\"", jobs[2].Attr)
	require.Equal(t, `"a\x1b[31m\x07"`, jobs[3].Attr)
	require.Equal(t, `"a\u009b"`, jobs[4].Attr)
	require.Equal(t, `"a\\xfd"`, jobs[5].Attr)
	require.Equal(t, `"a\xfd".b`, jobs[6].Attr)
}

func TestErrorsArePrintable(t *testing.T) {
	j, err := ParseLine([]byte("{\"attr\":\"a\",\"error\":\"boom \\u0007\\u001b]0;title\\u0007 \xfd\\nnext\\tline\"}"))
	require.NoError(t, err)
	require.Equal(t, "boom \\x07\\x1b]0;title\\x07 \\xfd\nnext\tline", j.Error)
}

func TestLongNamesStayUniqueAndBounded(t *testing.T) {
	a := strings.Repeat("x", 100_000)
	n1, n2 := AttrName([]string{a + "1"}), AttrName([]string{a + "2"})
	require.NotEqual(t, n1, n2)
	require.LessOrEqual(t, len(n1), MaxAttrBytes)
	require.Equal(t, "short", AttrName([]string{"short"}))
}

func BenchmarkParseLine(b *testing.B) {
	line := []byte(`{"attr": "pkgs.pkg12345", "attrPath": ["pkgs", "pkg12345"], "drvPath": "/nix/store/j0000000000000000000000000012345-pkg12345.drv", ` +
		`"name": "pkg12345-1.0", "outputs": {"out": "/nix/store/j0000000000000000000000000012345-pkg12345"}, "system": "x86_64-linux", "isCached": false}`)
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseLine(line); err != nil {
			b.Fatal(err)
		}
	}
}
