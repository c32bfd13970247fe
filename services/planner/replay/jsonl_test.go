package replay

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

type stdJob struct {
	Attr        string   `json:"attr"`
	AttrPath    []string `json:"attrPath"`
	DrvPath     string   `json:"drvPath"`
	System      string   `json:"system"`
	IsCached    bool     `json:"isCached"`
	CacheStatus string   `json:"cacheStatus"`
	Error       string   `json:"error"`
}

func TestDecodeJobLine(t *testing.T) {
	tests := []struct {
		in   string
		want evalJob
	}{
		{`{"attr":"a","attrPath":["a"],"drvPath":"/nix/store/x.drv","outputs":{"out":"/nix/store/x"},"system":"x86_64-linux","isCached":true}`,
			evalJob{Attr: "a", AttrPath: []string{"a"}, DrvPath: "/nix/store/x.drv", System: "x86_64-linux", IsCached: true}},
		{` { "attr" : "b\"c\\d\u00e9" , "error": "line1\nline2", "cacheStatus": "local", "neededBuilds": [], "x": null, "n": -1.5e3 } `,
			evalJob{Attr: "b\"c\\dé", Error: "line1\nline2", CacheStatus: "local"}},
		{`{"attrPath":["a","b.c"],"inputDrvs":{"/nix/store/y.drv":["out"]},"drvPath":null,"isCached":false}`,
			evalJob{AttrPath: []string{"a", "b.c"}}},
		{`{}`, evalJob{}},
	}
	for _, tt := range tests {
		var got evalJob
		require.NoError(t, decodeJobLine([]byte(tt.in), &got), tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
	for _, bad := range []string{`{`, `{"attr"}`, `{"attr":1}`, `{"attr":"a"`, `{"attr":"a"} x`, `{"isCached":"yes"}`,
		`{"attrPath":["a",]}`, `{"x":[1,2}`, `{"x":}`, `{"attr":"\x"}`} {
		var got evalJob
		require.Error(t, decodeJobLine([]byte(bad), &got), bad)
	}
}

func TestDecodeJobLineManyEscapes(t *testing.T) {
	// A long error with many escapes is scanned once, not once per escape.
	msg := strings.Repeat(`a\n`, 200_000)
	var got evalJob
	require.NoError(t, decodeJobLine([]byte(`{"attr":"a","error":"`+msg+`","x":"`+msg+`"}`), &got))
	require.Equal(t, strings.Repeat("a\n", 200_000), got.Error)
}

func FuzzDecodeJobLine(f *testing.F) {
	f.Add(`{"attr":"a","attrPath":["a"],"drvPath":"/nix/store/x.drv","system":"x86_64-linux","isCached":true}`)
	f.Add(`{"attr":"e","error":"oops\n\u00e9","outputs":{"out":"/x"},"cacheStatus":"cached"}`)
	f.Fuzz(func(t *testing.T, in string) {
		var got evalJob
		err := decodeJobLine([]byte(in), &got)
		var want stdJob
		if json.Unmarshal([]byte(in), &want) != nil || !utf8.ValidString(in) || bytes.ContainsAny([]byte(in), "ABCDEFGHIJKLMNOPQRSTUVWXYZ\\") {
			return // encoding/json folds case in keys and replaces bad UTF-8; compare only plain input
		}
		if !strings.HasPrefix(strings.TrimSpace(in), "{") {
			return
		}
		require.NoError(t, err)
		require.Equal(t, evalJob(want), got)
	})
}
