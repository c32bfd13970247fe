package evaljobs

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"nixbus.dev/nixbus/pkg/jsontok"
)

type walkLike struct {
	AttrPath []string          `json:"attrPath"`
	DrvPath  string            `json:"drvPath"`
	Outputs  map[string]string `json:"outputs"`
	Failed   bool              `json:"failed"`
	N        int               `json:"n"`
	F        float64
	P        *string
	Any      any    `json:"any"`
	Skip     string `json:"-"`
	private  string //nolint:unused // an unexported field the decoder must skip, as encoding/json does
}

func TestUnmarshalMatchesEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`[]`, `null`,
		`[{"attrPath":["a","b c","\u00e9\n\"\\"],"drvPath":"/nix/store/x.drv","outputs":{"out":"/o","dev":null},"failed":true,"n":-3,"f":1.5e2,"P":"p","any":{"x":[1,"y",true,null]},"unknown":{"deep":[1,2]},"-":"z","private":"q"}]`,
		`[{"ATTRPATH":["folded"]},{"attrPath":null}]`,
		`[{"any":"\ud83d\ude00 \ud800 x"}]`,
	} {
		var want, got []walkLike
		require.NoError(t, json.Unmarshal([]byte(in), &want))
		require.NoError(t, Unmarshal([]byte(in), &got), in)
		require.Equal(t, want, got, in)
	}
	var names []string
	require.NoError(t, Unmarshal([]byte(` [ "a" , "b" ] `), &names))
	require.Equal(t, []string{"a", "b"}, names)
	for _, bad := range []string{`[`, `[1]`, `{"attrPath":1}`, `[] x`, `"a`, `[{"n":"x"}]`} {
		var out []walkLike
		require.Error(t, Unmarshal([]byte(bad), &out), bad)
	}
}

func TestUnmarshalKeepsBytes(t *testing.T) {
	var recs []walkLike
	in := "[{\"attrPath\":[\"a\xfd\"]},{\"attrPath\":[\"a\xfe\"],\"outputs\":{\"o\xff\":\"\xfe\"}}]"
	require.NoError(t, Unmarshal([]byte(in), &recs))
	require.Equal(t, []string{"a\xfd"}, recs[0].AttrPath)
	require.Equal(t, []string{"a\xfe"}, recs[1].AttrPath)
	require.Equal(t, map[string]string{"o\xff": "\xfe"}, recs[1].Outputs)

	var lossy []walkLike
	require.NoError(t, json.Unmarshal([]byte(in), &lossy))
	require.Equal(t, lossy[0].AttrPath, lossy[1].AttrPath, "encoding/json merges them: the reason Unmarshal exists")
}

// FuzzUnmarshalMatchesEncodingJSON: on UTF-8 input, Unmarshal into an
// any accepts what encoding/json accepts and gives the same value.
func FuzzUnmarshalMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"a": [1, "x", true, null, {"b": -2.5e3}]}`, `"\ud83d\ude00\ud800"`, `[1e400]`, `{"a": 1, "a": 2}`, `[`, `01`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got any
		err := Unmarshal(data, &got)
		if !utf8.Valid(data) || errors.Is(err, jsontok.ErrTooDeep) {
			return
		}
		var want any
		werr := json.Unmarshal(data, &want)
		require.Equal(t, werr == nil, err == nil, "%q: encoding/json %v, Unmarshal %v", data, werr, err)
		if err == nil {
			require.Equal(t, want, got, "%q", data)
		}
	})
}
