package evaljobs

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestStrings(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`[]`, []string{}},
		{` [ "a" , "b" ] `, []string{"a", "b"}},
		{`["\u00e9\n\"\\\u0001", "\ud83d\ude00 \ud800 x", ""]`, []string{"é\n\"\\\x01", "😀 \uFFFD x", ""}},
	} {
		got, err := Strings([]byte(tc.in))
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
	for _, bad := range []string{``, `null`, `[`, `[1]`, `["a", null]`, `[["a"]]`, `{"a": "b"}`, `"a"`, `[] x`, `["a"`} {
		_, err := Strings([]byte(bad))
		require.Error(t, err, bad)
	}
}

func TestStringsKeepBytes(t *testing.T) {
	in := "[\"a\xfd\",\"a\xfe\"]"
	got, err := Strings([]byte(in))
	require.NoError(t, err)
	require.Equal(t, []string{"a\xfd", "a\xfe"}, got)

	var lossy []string
	require.NoError(t, json.Unmarshal([]byte(in), &lossy))
	require.Equal(t, lossy[0], lossy[1], "encoding/json merges them: the reason Strings exists")
}

// FuzzStringsMatchesEncodingJSON: on UTF-8 input, Strings accepts the
// lists of strings encoding/json accepts, and gives the same strings.
func FuzzStringsMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{`["a", "\ud83d\ude00\ud800"]`, `[]`, `[1]`, `null`, `[`, `["a"] x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Strings(data)
		if !utf8.Valid(data) {
			return
		}
		var want []string
		werr := json.Unmarshal(data, &want)
		if werr == nil && want == nil {
			werr = errors.New("null, not a list")
		}
		require.Equal(t, werr == nil, err == nil, "%q: encoding/json %v, Strings %v", data, werr, err)
		if err == nil {
			require.Equal(t, want, got, "%q", data)
		}
	})
}
