package jsontok

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// tokens reads every token of sc as encoding/json's Decoder.Token gives
// them (UseNumber): json.Delim, string, json.Number, bool, nil.
func tokens(sc *Scanner) ([]any, error) {
	var out []any
	for {
		k, err := sc.Next()
		if err != nil {
			return out, err
		}
		switch k {
		case End:
			return out, nil
		case ObjectStart:
			out = append(out, json.Delim('{'))
		case ObjectEnd:
			out = append(out, json.Delim('}'))
		case ArrayStart:
			out = append(out, json.Delim('['))
		case ArrayEnd:
			out = append(out, json.Delim(']'))
		case Key, String:
			out = append(out, sc.Text())
		case Number:
			out = append(out, json.Number(sc.Text()))
		case True:
			out = append(out, true)
		case False:
			out = append(out, false)
		case Null:
			out = append(out, nil)
		}
	}
}

// reference is encoding/json's reading of data: nil and false when it
// does not accept data as one JSON value.
func reference(data []byte) ([]any, bool) {
	if !json.Valid(data) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out []any
	for {
		t, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out, true
		}
		if err != nil {
			return nil, false
		}
		out = append(out, t)
	}
}

// lossy is what encoding/json makes of a string: each byte that is not
// part of valid UTF-8 becomes U+FFFD.
func lossy(toks []any) []any {
	out := make([]any, len(toks))
	for i, t := range toks {
		if s, ok := t.(string); ok && !utf8.ValidString(s) {
			var b []byte
			for _, r := range s {
				b = utf8.AppendRune(b, r)
			}
			t = string(b)
		}
		out[i] = t
	}
	return out
}

func FuzzScannerMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{
		`{"a": [1, -2.5e+3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9"]}`,
		`"\ud83d\ude00 \ud800 \udc00 \ud800\u0041 \ud800\ud800\udc00"`,
		`[[[{}]], {"": {"k": []}}]`, "\"a\xffb\"", `{"a" 1}`, `[1,]`, `01`, `1.`, `-`, `"\x"`, "\"\x01\"",
		`tru`, `nul`, `{"a":1}}`, ` 0 `, `[1e5, 0.5, -0, 1E-2]`, `"\u00"`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := tokens(NewBytes(data, Limits{}))
		streamed, serr := tokens(NewReader(iotest.OneByteReader(bytes.NewReader(data)), Limits{}))
		require.Equal(t, err == nil, serr == nil, "%q: bytes %v, reader %v", data, err, serr)
		if err == nil {
			require.Equal(t, got, streamed)
		}
		if errors.Is(err, ErrTooDeep) {
			return // encoding/json allows deeper nesting
		}
		want, ok := reference(data)
		require.Equal(t, ok, err == nil, "%q: encoding/json accepts: %v, jsontok: %v", data, ok, err)
		if !ok {
			return
		}
		if utf8.Valid(data) {
			require.Equal(t, want, got, "%q", data)
		} else {
			// Bytes that are not UTF-8 are kept; encoding/json replaces them.
			require.Equal(t, want, lossy(got), "%q", data)
		}
	})
}

func TestScannerStrings(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`"\ud83d\ude00"`, "😀"},
		{`"\ud800"`, "\uFFFD"},
		{`"\udc00x"`, "\uFFFDx"},
		{`"\ud800\u0041"`, "\uFFFDA"},
		{`"\ud800\ud800\udc00"`, "\uFFFD\U00010000"},
		{`"\ud800\""`, "\uFFFD\""},
		{`"\u0000"`, "\x00"},
		{`"a\u0000b"`, "a\x00b"},
		{`"\u00E9\u00e9"`, "éé"},
		{`"\/\b\f\n\r\t\\\""`, "/\b\f\n\r\t\\\""},
		{"\"a\xffb\xc3\"", "a\xffb\xc3"},
		{"\"\xed\xa0\x80\"", "\xed\xa0\x80"},
		{"\"\xff\\n\xfe\"", "\xff\n\xfe"},
		{"\"\x7f\"", "\x7f"},
		{`"0123456789abcdef\"0123456789abcdef"`, `0123456789abcdef"0123456789abcdef`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			for _, sc := range []*Scanner{NewBytes([]byte(tc.in), Limits{}), NewReader(iotest.OneByteReader(strings.NewReader(tc.in)), Limits{})} {
				require.NoError(t, sc.Expect(String))
				require.Equal(t, tc.want, string(sc.Bytes()))
				k, err := sc.Next()
				require.NoError(t, err)
				require.Equal(t, End, k)
			}
		})
	}
}

func TestScannerRejects(t *testing.T) {
	for _, in := range []string{
		"", " ", `{`, `[`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `[1,`, `"abc`, `"\`, `"\u12`, `tr`, `-`, `1.`, `1e`, `1e+`,
		`{"a":1,}`, `[1,]`, `{,}`, `[,1]`, `{"a" 1}`, `{1:2}`, `{"a":1 "b":2}`, `[1 2]`, `]`, `}`, `:`,
		`01`, `-01`, `+1`, `.5`, `1.e3`, `0x10`, `NaN`, `Infinity`, `truex`, `nulll`, `True`,
		`"\x"`, `"\u12g4"`, "\"\x00\"", "\"\x1f\"", "\"a\nb\"", `"a"b`, `1 2`, `{} {}`, `[]]`,
		`'a'`, `{"a":1}x`,
	} {
		t.Run(in, func(t *testing.T) {
			require.False(t, json.Valid([]byte(in)), "the table holds only what encoding/json rejects")
			_, err := tokens(NewBytes([]byte(in), Limits{}))
			var se *SyntaxError
			require.ErrorAs(t, err, &se)
			_, err = tokens(NewReader(iotest.OneByteReader(strings.NewReader(in)), Limits{}))
			require.ErrorAs(t, err, &se)
		})
	}
}

// TestScannerStringBytesAtEveryOffset puts each byte that ends or breaks
// a string at every offset of a long one, so that each lane of the
// eight-bytes-at-a-time scan is checked.
func TestScannerStringBytesAtEveryOffset(t *testing.T) {
	body := strings.Repeat("abcdefgh\xc3\xa9", 3)
	for i := range len(body) + 1 {
		for c := range byte(0x80) {
			in := `"` + body[:i] + string(c) + body[i:] + `"`
			if c == '"' {
				in = `["` + body[:i] + `", "` + body[i:] + `"]`
			}
			got, err := tokens(NewBytes([]byte(in), Limits{}))
			want, ok := reference([]byte(in))
			require.Equal(t, ok, err == nil, "%q: %v", in, err)
			if ok {
				require.Equal(t, want, lossy(got), "%q", in)
			}
		}
	}
}

// TestScannerTruncated checks that every proper prefix of a document is
// an error saying the input ended, with the offset where it did.
func TestScannerTruncated(t *testing.T) {
	doc := `{"a": [1, -2.5e+3, true, false, null, "x\"\u00e9\ud83d\ude00"], "b": {"c": {}}}`
	for i := range len(doc) {
		_, err := tokens(NewReader(iotest.HalfReader(strings.NewReader(doc[:i])), Limits{}))
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "%q", doc[:i])
		var se *SyntaxError
		require.ErrorAs(t, err, &se)
		require.LessOrEqual(t, se.Offset, int64(i))
	}
	_, err := tokens(NewBytes([]byte(doc), Limits{}))
	require.NoError(t, err)
}

func TestScannerReadError(t *testing.T) {
	r := io.MultiReader(strings.NewReader(`{"a": [1, 2`), iotest.ErrReader(errors.New("disk gone")))
	_, err := tokens(NewReader(r, Limits{}))
	require.ErrorContains(t, err, "disk gone")
	// After the value too: a failing reader is not a clean end.
	r = io.MultiReader(strings.NewReader(`{} `), iotest.ErrReader(errors.New("disk gone")))
	_, err = tokens(NewReader(r, Limits{}))
	require.ErrorContains(t, err, "disk gone")
}

func TestScannerDepth(t *testing.T) {
	nest := func(n int) []byte {
		return []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
	}
	_, err := tokens(NewBytes(nest(DefaultMaxDepth), Limits{}))
	require.NoError(t, err)
	_, err = tokens(NewBytes(nest(DefaultMaxDepth+1), Limits{}))
	require.ErrorIs(t, err, ErrTooDeep)
	_, err = tokens(NewBytes([]byte(`{"a":{"b":[1]}}`), Limits{MaxDepth: 2}))
	require.ErrorIs(t, err, ErrTooDeep)
	// Skip is bounded too.
	sc := NewBytes(nest(100_000), Limits{})
	require.ErrorIs(t, sc.Skip(), ErrTooDeep)
}

func TestScannerHugeStrings(t *testing.T) {
	big := strings.Repeat("0123456789\\n", 1<<20) // 12 MiB as written
	doc := `{"skip": "` + big + `", "keep": "` + big + `"}`
	sc := NewReader(strings.NewReader(doc), Limits{})
	require.NoError(t, sc.Expect(ObjectStart))
	require.NoError(t, sc.Expect(Key))
	require.Equal(t, "skip", sc.Text())
	require.NoError(t, sc.Skip())
	require.LessOrEqual(t, cap(sc.buf), readSize, "a skipped string is not held")
	require.NoError(t, sc.Expect(Key))
	require.NoError(t, sc.Expect(String))
	require.Equal(t, strings.ReplaceAll(big, `\n`, "\n"), sc.Text())
	require.NoError(t, sc.Expect(ObjectEnd))

	// A bound on tokens read; skipped ones are not held, so not bounded.
	sc = NewReader(strings.NewReader(doc), Limits{MaxToken: 1 << 20})
	require.NoError(t, sc.Expect(ObjectStart))
	require.NoError(t, sc.Expect(Key))
	require.NoError(t, sc.Skip())
	require.NoError(t, sc.Expect(Key))
	_, err := sc.Next()
	require.ErrorIs(t, err, ErrTooLong)
	_, err = sc.Next()
	require.ErrorIs(t, err, ErrTooLong, "errors stick")
	_, err = tokens(NewBytes([]byte(`[`+strings.Repeat("1", 100)+`]`), Limits{MaxToken: 99}))
	require.ErrorIs(t, err, ErrTooLong)
}

func TestScannerSkipAndPeek(t *testing.T) {
	in := `{"a": {"x": [1, {"y": "}]"}], "z": null}, "b": "v", "c": [], "d": 7}`
	sc := NewReader(iotest.OneByteReader(strings.NewReader(in)), Limits{})
	require.NoError(t, sc.Expect(ObjectStart))
	var kept []string
	for {
		k, err := sc.Peek()
		require.NoError(t, err)
		if k == ObjectEnd {
			break
		}
		require.NoError(t, sc.Expect(Key))
		key := sc.Text()
		k, err = sc.Peek()
		require.NoError(t, err)
		if k == String {
			require.NoError(t, sc.Expect(String))
			kept = append(kept, key+"="+sc.Text())
			continue
		}
		require.NoError(t, sc.Skip())
	}
	require.NoError(t, sc.Expect(ObjectEnd))
	require.Equal(t, []string{"b=v"}, kept)
	k, err := sc.Next()
	require.NoError(t, err)
	require.Equal(t, End, k)

	for _, bad := range []string{`{"a": [1, }`, `{"a": {"b" 1}}`, `{"a": [tru]}`, `{"a": "\q"}`} {
		sc := NewBytes([]byte(bad), Limits{})
		require.NoError(t, sc.Expect(ObjectStart))
		require.NoError(t, sc.Expect(Key))
		require.Error(t, sc.Skip(), bad)
	}
	sc = NewBytes([]byte(`{"a": 1}`), Limits{})
	require.NoError(t, sc.Expect(ObjectStart))
	require.Error(t, sc.Skip(), "a key is not a value")
}

// TestMembersAndElements: they hand over every member and element, and a
// callback that leaves its value unread is an error, never a value taken
// for a key or an endless loop.
func TestMembersAndElements(t *testing.T) {
	sc := NewBytes([]byte(`{"a": [1, "x"], "b": {}}`), Limits{})
	var got []string
	require.NoError(t, sc.Members(func(key []byte) error {
		got = append(got, string(key))
		if string(key) != "a" {
			return sc.Skip()
		}
		return sc.Elements(func() error {
			_, err := sc.Next()
			got = append(got, sc.Text())
			return err
		})
	}))
	require.Equal(t, []string{"a", "1", "x", "b"}, got)
	require.NoError(t, sc.Expect(End))

	for _, in := range []string{`{"a": "b"}`, `{"a": 1, "b": 2}`, `{"a": {"b": 1}}`} {
		sc := NewBytes([]byte(in), Limits{})
		require.Error(t, sc.Members(func([]byte) error { return nil }), in)
	}
	for _, in := range []string{`[1]`, `["a", "b"]`, `[[]]`} {
		sc := NewBytes([]byte(in), Limits{})
		require.Error(t, sc.Elements(func() error { return nil }), in)
	}
}

func TestScannerErrorsSayWhere(t *testing.T) {
	_, err := tokens(NewBytes([]byte(`{"a": [1, 2,, 3]}`), Limits{}))
	var se *SyntaxError
	require.ErrorAs(t, err, &se)
	require.Equal(t, int64(12), se.Offset)
	require.Equal(t, `JSON at byte 12: expected a value, found ','`, err.Error())
	sc := NewBytes([]byte(`[1]`), Limits{})
	require.EqualError(t, sc.Expect(ObjectStart), `JSON at byte 0: expected '{', found '['`)
}

func BenchmarkScannerSkip(b *testing.B) {
	var doc strings.Builder
	doc.WriteString("{")
	for i := range 10_000 {
		fmt.Fprintf(&doc, `"/nix/store/%032d-x.drv": {"env": {"buildPhase": "%s"}, "inputDrvs": {"/nix/store/a.drv": ["out"]}},`, i, strings.Repeat("make \\\"all\\\" ", 40))
	}
	doc.WriteString(`"x": 1}`)
	data := []byte(doc.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sc := NewBytes(data, Limits{})
		if err := sc.Skip(); err != nil {
			b.Fatal(err)
		}
	}
}
